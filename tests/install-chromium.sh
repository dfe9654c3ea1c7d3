#!/bin/sh
# Installs Chromium for the page test (tests/it/page.rs) unless one is there.
command -v chromium || command -v chromium-browser || command -v google-chrome || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium)
