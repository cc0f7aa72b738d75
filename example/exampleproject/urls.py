from django.urls import path, re_path

from . import views

urlpatterns = [
    path("", views.hello),
    path("echo/", views.echo),
    path("stream/<int:size>/", views.stream),
    path("error/", views.error),
    path("slow/<int:millis>/", views.slow),
    re_path(r"^path/(?P<rest>.*)$", views.show_path),
]
