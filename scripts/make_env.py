"""Print a development .env with fresh random keys (used by `make run`)."""

import secrets

from cryptography.fernet import Fernet

print(f"""# Written by `make run` for local development; see .env.example for every variable.
DJANGO_DEBUG=true
DJANGO_SECRET_KEY={secrets.token_urlsafe(50)}
FIELD_ENCRYPTION_KEYS={Fernet.generate_key().decode()}
# The local mail catcher listens on 1025; allow it as a demo "own server".
SMTP_ALLOWED_PORTS=25,465,587,1025
SMTP_ALLOW_PRIVATE_HOSTS=true
PLATFORM_SENDING_IPS=127.0.0.1""")
