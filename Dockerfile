# One image for every directo_mail process in docker-compose.yml: web (gunicorn + whitenoise),
# the Celery workers of both lanes, beat, the one-shot migrate and the local mail catcher.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# gettext compiles the translation catalogues below; the wheels need nothing else.
RUN apt-get update \
    && apt-get install -y --no-install-recommends gettext \
    && rm -rf /var/lib/apt/lists/*

# Requirements first, so code changes reuse the installed-packages layer.
COPY requirements.txt /tmp/requirements.txt
RUN pip install -r /tmp/requirements.txt

# Never run as root: `app` owns only its checkout and var/ (mail catcher, beat schedule).
RUN useradd --create-home --uid 1000 --user-group app \
    && install -d -o app -g app /app
WORKDIR /app
COPY --chown=app:app . .
USER app

# Static files and catalogues are built into the image (no database is touched). The settings
# refuse to load without their own keys: these two steps get throwaway ones that live only in
# this RUN and sign or encrypt nothing; the containers get theirs from .env.compose.
# var/mail exists so its volume is mounted writable for `app`.
RUN export DJANGO_SECRET_KEY="$(python -c 'import secrets; print(secrets.token_urlsafe(50))')" \
        FIELD_ENCRYPTION_KEYS="$(python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())')" \
    && python manage.py collectstatic --noinput \
    && python manage.py compilemessages \
    && mkdir -p var/mail

EXPOSE 8000
CMD ["gunicorn", "directo_mail.wsgi", "--bind", "0.0.0.0:8000", "--access-logfile", "-"]
