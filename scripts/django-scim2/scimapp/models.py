"""Users and groups with django-scim2's SCIM mixins (its adapters need the
scim_id fields; groups list their members through `user_set`)."""
from django.contrib.auth.models import AbstractUser
from django.db import models
from django_scim.models import AbstractSCIMGroupMixin, AbstractSCIMUserMixin


class Group(AbstractSCIMGroupMixin):
    name = models.CharField(max_length=254, blank=True)


class User(AbstractSCIMUserMixin, AbstractUser):
    scim_groups = models.ManyToManyField(Group, related_name="user_set", blank=True)
