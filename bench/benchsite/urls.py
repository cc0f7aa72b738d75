from django.urls import path
from exampleproject.urls import urlpatterns as example_urlpatterns

from . import views

urlpatterns = [
    path("big/<int:size>/", views.big),
    path("gc/", views.collect),
    *example_urlpatterns,
]
