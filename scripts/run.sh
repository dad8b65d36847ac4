#!/usr/bin/env bash
# Start the local mail catcher, a Celery worker and the web server; Ctrl-C stops all three.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
HOST=${HOST:-127.0.0.1}
PORT=${PORT:-8000}
mkdir -p var/log
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

$BIN/python manage.py mail_catcher >var/log/mail_catcher.log 2>&1 & pids+=($!)
$BIN/celery -A directo_mail worker --loglevel=INFO --concurrency=2 >var/log/worker.log 2>&1 & pids+=($!)

cat <<MSG

  directo_mail is starting on http://$HOST:$PORT/
  Log in as ADMIN (administrator), ANNA (Default), SMTP (own server), M365 (Microsoft 365)
  or REPLY (Directo-Reply-to); the password of each is "demo".
  Mail the relay sends is kept in var/mail/; logs are in var/log/. Ctrl-C stops everything.

MSG
$BIN/python manage.py runserver "$HOST:$PORT"
