#!/bin/sh
# OpenNebula downloader.sh for rsync:// URLs (the harness's stand-in: ../rsyncDatastore.mjs).
exec node "$(dirname -- "$0")/../rsyncDatastore.mjs" download "$@"
