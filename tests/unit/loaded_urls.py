"""A URLconf for test_runner: imported only by runner.load_django_app()."""
urlpatterns = []
