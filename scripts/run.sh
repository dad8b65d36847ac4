#!/usr/bin/env bash
# Start the local mail catcher, a Celery worker for each lane (interactive: single mails and the
# sweeper; bulk: mass-mailing jobs), Celery beat (the sweeper every minute, the daily Microsoft
# 365 refresh) and the web server. Ctrl-C (or SIGTERM) stops them all, and so does any one of
# them exiting (a busy port, a crash). Logs go to LOG_DIR (var/log), beat's schedule to
# BEAT_SCHEDULE (var/celerybeat-schedule).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
HOST=${HOST:-127.0.0.1}
PORT=${PORT:-8000}
LOG_DIR=${LOG_DIR:-var/log}
BEAT_SCHEDULE=${BEAT_SCHEDULE:-var/celerybeat-schedule}
mkdir -p "$LOG_DIR" "$(dirname "$BEAT_SCHEDULE")"

pids=()
cleanup() {
  trap - EXIT INT TERM
  kill -TERM "${pids[@]}" 2>/dev/null || true
  # A worker finishes its current task first (warm shutdown); give them 15 s, then kill.
  local deadline=$((SECONDS + 15))
  while [ -n "$(jobs -rp)" ] && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.2; done
  # shellcheck disable=SC2046 # one pid per word
  kill -KILL $(jobs -rp) 2>/dev/null || true
  wait 2>/dev/null || true
}
trap cleanup EXIT
# Bash runs a trap only once the foreground command returns, so every process runs in the
# background and the script sits in `wait`, which a signal interrupts at once.
trap 'exit 130' INT
trap 'exit 143' TERM

$BIN/python manage.py mail_catcher >"$LOG_DIR/mail_catcher.log" 2>&1 &
pids+=($!)
# The lanes (CELERY_TASK_ROUTES in directo_mail/settings.py): a test e-mail never waits behind
# a bulk job. Each worker has its own node name, so the two do not take each other for a double.
$BIN/celery -A directo_mail worker -Q interactive --concurrency=2 -n interactive@%h \
  --loglevel=INFO >"$LOG_DIR/worker-interactive.log" 2>&1 &
pids+=($!)
$BIN/celery -A directo_mail worker -Q bulk --concurrency=2 -n bulk@%h \
  --loglevel=INFO >"$LOG_DIR/worker-bulk.log" 2>&1 &
pids+=($!)
$BIN/celery -A directo_mail beat --schedule "$BEAT_SCHEDULE" --loglevel=INFO \
  >"$LOG_DIR/beat.log" 2>&1 &
pids+=($!)

cat <<MSG

  directo_mail is starting on http://$HOST:$PORT/
  Log in as ADMIN (administrator), ANNA (Default), SMTP (own server), M365 (Microsoft 365)
  or REPLY (Directo-Reply-to); the password of each is "demo".
  Mail the relay sends is kept in var/mail/; logs are in $LOG_DIR/. Ctrl-C stops everything.

MSG
$BIN/python manage.py runserver "$HOST:$PORT" &
pids+=($!)

# Whichever stops first ends the script; the EXIT trap then stops the others.
status=0
wait -n "${pids[@]}" || status=$?
echo "A process stopped (exit status $status); stopping the others." >&2
exit "$status"
