# shellcheck shell=bash
# private_apt DIR ARCH SUITE...: writes DIR/apt.conf, an apt configuration of our own (its own
# sources, lists and cache under DIR) for looking up and downloading Debian packages without
# touching the machine's apt. ARCH is "" for the machine's architecture; each SUITE is a line's
# "<archive> <suite>", such as "debian bookworm" or "debian-security bookworm-security".
# Use it as APT_CONFIG=DIR/apt.conf apt-get ...; downloads go to DIR/debs by convention.
private_apt() {
  local dir=$1 arch=$2
  shift 2
  mkdir -p "$dir/lists/partial" "$dir/cache/archives/partial" "$dir/etc/preferences.d" "$dir/debs"
  printf 'deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/%s main\n' "$@" > "$dir/sources.list"
  cat > "$dir/apt.conf" <<CONF
Dir::Etc::sourcelist "$dir/sources.list";
Dir::Etc::sourceparts "-";
Dir::Etc::preferencesparts "$dir/etc/preferences.d";
Dir::State::Lists "$dir/lists";
Dir::Cache "$dir/cache";
Acquire::IndexTargets::deb::DEP-11::DefaultEnabled "false";
Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled "false";
Acquire::Languages "none";
APT::Get::List-Cleanup "false";
APT::Sandbox::User "root";
CONF
  if [ -n "$arch" ]; then
    printf 'APT::Architectures { "%s"; };\nAPT::Architecture "%s";\n' "$arch" "$arch" >> "$dir/apt.conf"
  fi
}
