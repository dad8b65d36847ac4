"""URLs of the user card, its e-mail verification and the OAuth providers' sign-in, under
/accounts/ (namespace "card"). Each OAuth provider of the registry gets connect, callback and
disconnect at /accounts/<key>/..., django-allauth's shape; Entra app registrations name
/accounts/microsoft365/callback/, Google OAuth clients /accounts/google/callback/."""

from django.urls import path

from . import card_views, providers

app_name = "card"

urlpatterns = [
    path("card/", card_views.card, name="card"),
    path("card/<str:code>/", card_views.card, name="card_of"),
    path("email/verify/", card_views.email_verification_send, name="email_verification_send"),
    path("email/verify/<str:token>/", card_views.email_verify, name="email_verify"),
]
for _provider in providers.oauth_providers():
    _kwargs = {"provider": _provider.key}
    urlpatterns += [
        path(
            f"{_provider.key}/connect/",
            card_views.oauth_connect,
            _kwargs,
            name=f"{_provider.key}_connect",
        ),
        path(
            f"{_provider.key}/callback/",
            card_views.oauth_callback,
            _kwargs,
            name=f"{_provider.key}_callback",
        ),
        path(
            f"{_provider.key}/disconnect/",
            card_views.oauth_disconnect,
            _kwargs,
            name=f"{_provider.key}_disconnect",
        ),
    ]
