#!/usr/bin/env bash
# Debian's Postfix: `smtp-sink` is the sink of bench/bulk_send.py, and a private Postfix
# instance on loopback writes the real bounces of the bounce tests. The package is installed
# with "No configuration": nothing listens until a test or the bench starts its own instance.
set -euo pipefail
command -v smtp-sink >/dev/null 2>&1 && [ -x /usr/sbin/postfix ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "Installing Debian's postfix (no configuration) for the bounce tests and the bench..."
  export DEBIAN_FRONTEND=noninteractive
  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
  apt-get update -qq
  apt-get install -y -qq postfix >/dev/null
  exit 0
fi
echo "The bounce tests need Debian's Postfix: run 'sudo apt-get install postfix' (No configuration)." >&2
exit 1
