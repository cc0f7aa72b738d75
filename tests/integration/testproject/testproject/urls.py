from django.urls import path, re_path

from . import views

urlpatterns = [
    path("stream/<int:size>", views.stream),
    path("error/", views.error),
    path("upload/", views.upload),
    path("form/", views.form),
    path("endless/<token>", views.endless),
    re_path(r"^(?P<rest>.*)$", views.echo),
]
