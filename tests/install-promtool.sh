#!/bin/sh
# Installs promtool (Debian's prometheus package) for the alert-rule check
# (tests/it/deploy.rs) unless it is there. The service is not started.
command -v promtool || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus)
