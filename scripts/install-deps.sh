#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian machine (as root):
# Postfix and an SMTP client, Dovecot (LMTP, the as-shipped benchmark's
# baseline), GnuPG, Java for the npm-packaged Cassandra,
# systemd-analyze for the unit files, a C compiler, and the Go modules.
# Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
# The race detector needs cgo; the lookupd benchmark builds a small C client.
command -v cc >/dev/null || need+=(gcc libc6-dev)
command -v postfix >/dev/null || [ -x /usr/sbin/postfix ] || need+=(postfix)
command -v swaks >/dev/null || need+=(swaks libnet-ssleay-perl)
# A private Dovecot (dovecot -c FILE) is the LMTP baseline of e2e's as-shipped benchmark.
command -v dovecot >/dev/null || [ -x /usr/sbin/dovecot ] || need+=(dovecot-core dovecot-lmtpd)
command -v gpg >/dev/null || need+=(gnupg)
command -v openssl >/dev/null || need+=(openssl)
command -v java >/dev/null || need+=(openjdk-17-jre-headless)
command -v npm >/dev/null || need+=(npm)
command -v systemd-analyze >/dev/null || need+=(systemd)
# dkimpy seals ARC chains independently of our code in the verify tests.
/usr/bin/python3 -c "import dkim, authres" 2>/dev/null || need+=(python3-dkim python3-authres)

if [ ${#need[@]} -gt 0 ]; then
  echo "install-deps: apt-get install ${need[*]}"
  # Postfix asks what kind of mail system this is; our tests run private
  # instances with their own configuration, so the system one stays unconfigured.
  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
go mod download
