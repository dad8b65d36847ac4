#!/usr/bin/env bash
# Start the local mail catcher, a Celery worker and the web server; Ctrl-C (or SIGTERM) stops
# all three, and so does any one of them exiting (a busy port, a crash).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
HOST=${HOST:-127.0.0.1}
PORT=${PORT:-8000}
mkdir -p var/log

pids=()
cleanup() {
  trap - EXIT INT TERM
  kill -TERM "${pids[@]}" 2>/dev/null || true
  # The worker finishes its current task first (warm shutdown); give it 15 s, then kill.
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

$BIN/python manage.py mail_catcher >var/log/mail_catcher.log 2>&1 &
pids+=($!)
$BIN/celery -A directo_mail worker --loglevel=INFO --concurrency=2 >var/log/worker.log 2>&1 &
pids+=($!)

cat <<MSG

  directo_mail is starting on http://$HOST:$PORT/
  Log in as ADMIN (administrator), ANNA (Default), SMTP (own server), M365 (Microsoft 365)
  or REPLY (Directo-Reply-to); the password of each is "demo".
  Mail the relay sends is kept in var/mail/; logs are in var/log/. Ctrl-C stops everything.

MSG
$BIN/python manage.py runserver "$HOST:$PORT" &
pids+=($!)

# Whichever stops first ends the script; the EXIT trap then stops the other two.
status=0
wait -n "${pids[@]}" || status=$?
echo "A process stopped (exit status $status); stopping the others." >&2
exit "$status"
