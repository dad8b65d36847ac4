"""The app's URLs and /test-crash/, which opens the platform relay (refused) and fails."""

from django.core.mail import get_connection
from django.http import HttpRequest, HttpResponse
from django.urls import include, path
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.debug import sensitive_post_parameters


@csrf_exempt
@sensitive_post_parameters("password")
def crash(request: HttpRequest) -> HttpResponse:
    connection = get_connection("django.core.mail.backends.smtp.EmailBackend", timeout=5)
    connection.open()  # EMAIL_URL points at a closed port: ConnectionRefusedError
    return HttpResponse("unreachable")


urlpatterns = [path("test-crash/", crash), path("", include("directo_mail.urls"))]
