#!/usr/bin/env bash
# A stand-in for python:3.11-slim on a machine that cannot pull it: Debian bookworm (the Debian of the official
# image) with Debian's Python 3.11 and pip, made with debootstrap from a Debian mirror and imported into the local
# Docker engine. The images then build with `--build-arg BASE_IMAGE=TAG` (bench/image_sizes.py, docs/images.md).
# Needs root, debootstrap and a running engine. Usage: bench/debian_base.sh [TAG]
set -euo pipefail
tag=${1:-gift-local/python:3.11-bookworm}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
[ "$(id -u)" = 0 ] || { echo "debian_base.sh: debootstrap needs root" >&2; exit 2; }
command -v debootstrap >/dev/null || { echo "debian_base.sh: no debootstrap (apt-get install debootstrap)" >&2; exit 2; }
docker info >/dev/null || { echo "debian_base.sh: no Docker engine answers" >&2; exit 2; }

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase --include=python3,python3-pip,python-is-python3,ca-certificates,netbase,tzdata \
	bookworm "$root" "$mirror"
# As in the official image, pip owns the system Python: no PEP 668 marker.
rm -f "$root"/usr/lib/python3.11/EXTERNALLY-MANAGED
# Behind a TLS-intercepting proxy pip must trust its CA: the base trusts the CAs this host added locally.
if compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
	cp /usr/local/share/ca-certificates/*.crt "$root"/usr/local/share/ca-certificates/
	chroot "$root" update-ca-certificates
fi
# As debian:bookworm-slim, under the official image: no package lists or caches, documentation or locales.
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/usr/share/{doc,man,info,locale}/*
tar -C "$root" -c . | docker import \
	--change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
	--change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' - "$tag"
docker image ls "$tag"
