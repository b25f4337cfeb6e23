#!/usr/bin/env bash
# Installs the PostgreSQL and Redis servers that tests/test_postgres.py and
# tests/test_redis.py start (from Debian's packages; root and apt-get needed).
# Exits 0 when both are available, so scripts/test.sh can make those tests
# mandatory; otherwise says why and exits 1 (the tests then skip, naming it).
set -uo pipefail
have_pg() { compgen -G "/usr/lib/postgresql/*/bin/postgres" >/dev/null; }
have_redis() { command -v redis-server >/dev/null 2>&1; }
if [ "$(id -u)" = 0 ]; then
  # PostgreSQL runs as the 'postgres' user and its initdb writes to
  # /dev/null; some sandboxes ship a /dev/null only root may write.
  if [ "$(stat -c %a /dev/null)" != 666 ]; then
    echo "note: /dev/null had mode $(stat -c %a /dev/null); setting the standard 666"
    chmod 666 /dev/null
  fi
  need=()
  have_pg || need+=(postgresql)
  have_redis || need+=(redis-server)
  if [ ${#need[@]} -gt 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "== installing ${need[*]} (Debian packages) for the server tests"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
      apt-get install -y -qq --no-install-recommends "${need[@]}") >/dev/null 2>&1 \
      || echo "warning: apt-get install ${need[*]} failed"
  fi
fi
if have_pg && have_redis; then
  exit 0
fi
echo "warning: PostgreSQL or Redis is missing: tests/test_postgres.py and" \
  "tests/test_redis.py will be skipped (run as root with apt-get to install them)"
exit 1
