"""Accepts one static bearer token (TETHER_SCIM_TOKEN) as an authenticated
service: django-scim2 leaves authentication to the project."""
import hmac
import os

from django.contrib.auth.models import AnonymousUser


class Service(AnonymousUser):
    @property
    def is_authenticated(self):
        return True


class BearerToken:
    def __init__(self, get_response):
        self.get_response = get_response
        self.expected = "Bearer " + os.environ["TETHER_SCIM_TOKEN"]

    def __call__(self, request):
        given = request.META.get("HTTP_AUTHORIZATION", "")
        request.user = Service() if hmac.compare_digest(given, self.expected) else AnonymousUser()
        return self.get_response(request)
