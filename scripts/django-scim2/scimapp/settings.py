"""Settings of the test SCIM server. Everything a run varies comes from the
environment: TETHER_SCIM_DB (the SQLite file), TETHER_SCIM_NETLOC
(host:port, for the `location`s it returns) and TETHER_SCIM_TOKEN (the one
bearer token it accepts)."""
import os

SECRET_KEY = "tether-tests-only"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
USE_TZ = True
ROOT_URLCONF = "scimapp.urls"
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "django_scim", "scimapp"]
MIDDLEWARE = ["scimapp.auth.BearerToken", "django_scim.middleware.SCIMAuthCheckMiddleware"]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": os.environ.get("TETHER_SCIM_DB", ":memory:")}}
AUTH_USER_MODEL = "scimapp.User"
SCIM_SERVICE_PROVIDER = {
    "NETLOC": os.environ.get("TETHER_SCIM_NETLOC", "127.0.0.1:8000"),
    "SCHEME": "http",
    "GROUP_MODEL": "scimapp.models.Group",
    "AUTHENTICATION_SCHEMES": [{"type": "oauthbearertoken", "name": "Bearer token", "description": "A static bearer token"}],
}
LOGGING = {"version": 1, "disable_existing_loggers": False}
