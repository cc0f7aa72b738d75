from django.urls import path
from notes import views

urlpatterns = [
    path("notes/", views.note_list),
    path("notes/new/", views.new_note),
    path("about/", views.about),
    path("echo/", views.echo),
]
