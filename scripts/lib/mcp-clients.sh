#!/usr/bin/env bash
# Installs the MCP clients the end-to-end tests of `gemmactl mcp` drive: the official MCP
# Inspector (its CLI mode) and Claude Code's CLI, from npm, into the test cache outside the
# repository. Skipped when the pinned versions are already there. Prints nothing on stdout.
#
#   scripts/lib/mcp-clients.sh        # then tests/mcp_clients.rs finds them under
#                                     # ${GEMMACTL_TEST_CACHE:-$HOME/.cache/gemmactl-test}/mcp-clients
set -euo pipefail

INSPECTOR_VERSION=2.12.0
CLAUDE_CODE_VERSION=2.1.332
cache="${GEMMACTL_TEST_CACHE:-$HOME/.cache/gemmactl-test}/mcp-clients"
stamp="$cache/.installed-inspector-$INSPECTOR_VERSION-claude-code-$CLAUDE_CODE_VERSION"

if [ -f "$stamp" ]; then
  exit 0
fi

if ! command -v npm >/dev/null 2>&1; then
  echo "==> installing Node.js and npm (Debian packages) for the MCP client tests" >&2
  if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
  $sudo apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq nodejs npm >&2
fi

echo "==> installing the MCP Inspector $INSPECTOR_VERSION and Claude Code $CLAUDE_CODE_VERSION into $cache" >&2
mkdir -p "$cache"
# A package.json of our own keeps npm from looking for one in a parent folder.
[ -f "$cache/package.json" ] || echo '{ "name": "gemmactl-mcp-test-clients", "private": true }' > "$cache/package.json"
npm install --prefix "$cache" --no-audit --no-fund --loglevel=error \
  "@modelcontextprotocol/inspector@$INSPECTOR_VERSION" \
  "@anthropic-ai/claude-code@$CLAUDE_CODE_VERSION" >&2
rm -f "$cache"/.installed-*
touch "$stamp"
