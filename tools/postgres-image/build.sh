#!/usr/bin/env bash
# Builds a PostgreSQL image for the testcontainers leg from Debian's packages, with no
# container registry: debootstrap a minimal bookworm with postgresql-15, add entrypoint.sh,
# and `docker import` the tree. Idempotent: an image that already has the tag is kept
# (remove it, or pass --rebuild, to build again).
#
#   tools/postgres-image/build.sh [--rebuild] [TAG]     (default: usagekit/postgres:15-bookworm)
#
# Needs root, debootstrap, a running dockerd and a Debian mirror (DEBIAN_MIRROR, default
# http://deb.debian.org/debian). Prints the tag on its last line. Use the image with
#   USAGEKIT_TEST_POSTGRES_IMAGE=usagekit/postgres:15-bookworm npm test
set -euo pipefail
rebuild=0
if [ "${1:-}" = --rebuild ]; then rebuild=1; shift; fi
tag=${1:-usagekit/postgres:15-bookworm}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
here=$(cd "$(dirname "$0")" && pwd)

if [ "$rebuild" = 0 ] && docker image inspect "$tag" >/dev/null 2>&1; then
  echo "== $tag already exists; not rebuilding (--rebuild to force)" >&2
  echo "$tag"
  exit 0
fi
for program in debootstrap docker; do
  command -v "$program" >/dev/null || { echo "$program is missing (apt-get install debootstrap docker.io)" >&2; exit 1; }
done

root=$(mktemp -d /tmp/usagekit-postgres-image.XXXXXX)
trap 'rm -rf "$root"' EXIT
start=$(date +%s)
echo "== debootstrap bookworm with postgresql-15 into $root" >&2
debootstrap --variant=minbase --include=postgresql-15 bookworm "$root" "$mirror" >"$root.log" 2>&1 || {
  tail -n 30 "$root.log" >&2; rm -f "$root.log"; exit 1; }
rm -f "$root.log"
# The Debian package creates a cluster of its own; the entrypoint makes the one it needs.
rm -rf "$root"/var/lib/postgresql/15 "$root"/etc/postgresql/15
# Nothing the image needs at run time: apt's caches and the docs.
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/usr/share/doc/* "$root"/usr/share/man/*
install -m 0755 "$here/entrypoint.sh" "$root/usr/local/bin/docker-entrypoint.sh"

echo "== docker import as $tag" >&2
tar -C "$root" -c . | docker import \
  --change 'ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]' \
  --change 'CMD ["postgres"]' \
  --change 'ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV PGDATA=/var/lib/postgresql/data' \
  --change 'EXPOSE 5432' \
  - "$tag" >/dev/null
echo "== built $tag in $(( $(date +%s) - start )) s" >&2
echo "$tag"
