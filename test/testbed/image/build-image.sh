#!/bin/bash
# Builds the cowstack testbed guest image into an (empty, fresh) output directory:
#   vmlinuz            Debian's 6.1 kernel, unpacked from its .deb (never installed on the host)
#   initramfs.cpio     uncompressed newc cpio of a whole debootstrap'ed bookworm rootfs
#   id_ed25519[.pub]   ssh client key pair; the public half is root's authorized key in the guest
#   kernel-release     e.g. 6.1.0-56-amd64
#   dpkg.lst           package versions installed in the guest
#   modules.lst        kernel modules shipped in the guest
#
# Called by test/testbed/image.ts (ensureImage), which hashes the recipe, builds into a
# temporary directory and renames it into the cache only when this script succeeded.
#
# Environment (all required unless a default is given):
#   TB_OUT          output directory (must exist, should be empty)
#   TB_KERNEL_PKG   kernel package name, e.g. linux-image-6.1.0-56-amd64
#   TB_PACKAGES     comma-separated package list for debootstrap --include
#   TB_NODE_BIN     Node.js binary to copy into the guest as /usr/local/bin/node
#   TB_RECIPE_DIR   directory holding init, poweroff and modules.txt
#   TB_MIRROR       Debian mirror (default http://deb.debian.org/debian)
#   TB_SUITE        Debian suite (default bookworm)
#   TB_DEB_CACHE    optional directory where debootstrap keeps downloaded .debs between builds
#
# Progress goes to stderr. Needs root and the host packages debootstrap, cpio, openssh-client,
# dpkg (dpkg-deb) and apt (apt-get download).
set -euo pipefail

: "${TB_OUT:?}" "${TB_KERNEL_PKG:?}" "${TB_PACKAGES:?}" "${TB_NODE_BIN:?}" "${TB_RECIPE_DIR:?}"
TB_MIRROR=${TB_MIRROR:-http://deb.debian.org/debian}
TB_SUITE=${TB_SUITE:-bookworm}

START=$SECONDS
log() { printf '[testbed-image %4ss] %s\n' "$((SECONDS - START))" "$*" >&2; }

OUT=$(realpath "$TB_OUT")
WORK=$OUT/work
ROOT=$WORK/rootfs
mkdir -p "$WORK/kernel" "$ROOT"

# Undo every mount below $OUT (debootstrap mounts proc/sys into the target) so that the
# caller can always remove a failed build directory safely.
unmount_all() {
  local m
  # reverse order: deepest mounts first
  for m in $(awk -v p="$OUT/" 'index($2, p) == 1 { print $2 }' /proc/mounts | sort -r); do
    umount -l "$m" 2>/dev/null || true
  done
}
trap unmount_all EXIT

# ---------------------------------------------------------------- kernel
log "downloading $TB_KERNEL_PKG"
(cd "$WORK/kernel" && apt-get download -q -o APT::Sandbox::User=root "$TB_KERNEL_PKG" >&2)
deb=$(ls "$WORK"/kernel/*.deb)
dpkg-deb -x "$deb" "$WORK/kernel/x"
KVER=$(ls "$WORK/kernel/x/lib/modules")
[ "$(echo "$KVER" | wc -l)" = 1 ] || { log "expected one kernel release in $deb, got: $KVER"; exit 1; }
cp "$WORK/kernel/x/boot/vmlinuz-$KVER" "$OUT/vmlinuz"
echo "$KVER" >"$OUT/kernel-release"
log "kernel $KVER"

# ---------------------------------------------------------------- rootfs
# Two stages so that a policy-rc.d is in place before any maintainer script runs:
# no package may start a daemon on the build host.
log "debootstrap first stage ($TB_SUITE, minbase + $(echo "$TB_PACKAGES" | tr ',' '\n' | wc -l) packages)"
ds_opts=(--foreign --variant=minbase --include="$TB_PACKAGES")
if [ -n "${TB_DEB_CACHE:-}" ]; then
  mkdir -p "$TB_DEB_CACHE"
  ds_opts+=(--cache-dir="$(realpath "$TB_DEB_CACHE")")
fi
debootstrap "${ds_opts[@]}" "$TB_SUITE" "$ROOT" "$TB_MIRROR" >"$WORK/debootstrap1.log" 2>&1 ||
  { tail -n 30 "$WORK/debootstrap1.log" >&2; exit 1; }

mkdir -p "$ROOT/usr/sbin"
printf '#!/bin/sh\n# testbed build: never start services\nexit 101\n' >"$ROOT/usr/sbin/policy-rc.d"
chmod 755 "$ROOT/usr/sbin/policy-rc.d"

log "debootstrap second stage"
chroot "$ROOT" /debootstrap/debootstrap --second-stage >"$WORK/debootstrap2.log" 2>&1 ||
  { tail -n 30 "$WORK/debootstrap2.log" >&2; tail -n 30 "$ROOT/debootstrap/debootstrap.log" >&2 || true; exit 1; }
unmount_all
rm -f "$ROOT/usr/sbin/policy-rc.d"

# ---------------------------------------------------------------- kernel modules
# Put the whole module tree in place, let the guest's depmod compute dependencies, then
# keep only the wanted modules and their (hard and soft) dependencies.
log "selecting kernel modules"
MODDIR=$ROOT/lib/modules/$KVER
mkdir -p "$ROOT/lib/modules"
cp -a "$WORK/kernel/x/lib/modules/$KVER" "$MODDIR"
chroot "$ROOT" depmod -a "$KVER"

declare -A want=() name2path=() deps=()
while read -r p rest; do
  p=${p%:}
  n=$(basename "$p" .ko)
  name2path[${n//-/_}]=$p
  deps[$p]=$rest
done <"$MODDIR/modules.dep"
# soft dependencies ("softdep NAME pre: A B post: C") become ordinary dependencies
if [ -f "$MODDIR/modules.softdep" ]; then
  while read -r kw n rest; do
    [ "$kw" = softdep ] || continue
    p=${name2path[${n//-/_}]:-}
    [ -n "$p" ] || continue
    for s in $rest; do
      case $s in pre: | post:) continue ;; esac
      s=${name2path[${s//-/_}]:-}
      [ -n "$s" ] && deps[$p]="${deps[$p]} $s"
    done
  done <"$MODDIR/modules.softdep"
fi

while read -r line; do
  line=${line%%#*}
  line=${line//[[:space:]]/}
  [ -n "$line" ] || continue
  if [ -d "$MODDIR/kernel/$line" ]; then
    while read -r f; do want[${f#"$MODDIR"/}]=1; done < <(find "$MODDIR/kernel/$line" -name '*.ko*' -type f)
  elif [ -f "$MODDIR/kernel/$line" ]; then
    want[kernel/$line]=1
  else
    log "modules.txt: $line not found in $KVER"
    exit 1
  fi
done <"$TB_RECIPE_DIR/modules.txt"

# dependency closure
todo=("${!want[@]}")
while [ ${#todo[@]} -gt 0 ]; do
  m=${todo[-1]}
  unset 'todo[-1]'
  for d in ${deps[$m]:-}; do
    if [ -z "${want[$d]:-}" ]; then want[$d]=1; todo+=("$d"); fi
  done
done

keep=$WORK/keep.lst
printf '%s\n' "${!want[@]}" | sort >"$keep"
find "$MODDIR/kernel" -name '*.ko*' -type f | sed "s|^$MODDIR/||" | sort | comm -23 - "$keep" |
  while read -r f; do rm -f "$MODDIR/$f"; done
find "$MODDIR/kernel" -depth -type d -empty -delete
rm -f "$MODDIR"/modules.{alias,dep,softdep,symbols,devname}* "$MODDIR/build" "$MODDIR/source"
chroot "$ROOT" depmod -a "$KVER"
cp "$keep" "$OUT/modules.lst"
log "$(wc -l <"$keep") modules, $(du -sh "$MODDIR" | cut -f1)"

# ---------------------------------------------------------------- configuration
log "configuring rootfs"
install -m 0755 "$TB_RECIPE_DIR/init" "$ROOT/init"
# No init system in the guest: poweroff/halt/reboot/shutdown are one small script.
install -m 0755 "$TB_RECIPE_DIR/poweroff" "$ROOT/usr/local/sbin/poweroff"
for n in halt reboot shutdown; do ln -sf poweroff "$ROOT/usr/local/sbin/$n"; done

install -m 0755 "$TB_NODE_BIN" "$ROOT/usr/local/bin/node"

# ssh: root login by the testbed key only
ssh-keygen -q -t ed25519 -N '' -C cowstack-testbed -f "$OUT/id_ed25519"
install -d -m 0700 "$ROOT/root/.ssh"
install -m 0600 "$OUT/id_ed25519.pub" "$ROOT/root/.ssh/authorized_keys"
mkdir -p "$ROOT/etc/ssh/sshd_config.d"
cat >"$ROOT/etc/ssh/sshd_config.d/cowstack-testbed.conf" <<'EOF'
# cowstack testbed: root logs in with the testbed key, nothing else
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UseDNS no
MaxStartups 100:30:200
MaxSessions 100
EOF
# one fresh ed25519 host key (shared by all nodes; clients do not check it)
rm -f "$ROOT"/etc/ssh/ssh_host_*
ssh-keygen -q -t ed25519 -N '' -C cowstack-testbed-host -f "$ROOT/etc/ssh/ssh_host_ed25519_key"
echo 'HostKey /etc/ssh/ssh_host_ed25519_key' >"$ROOT/etc/ssh/sshd_config.d/00-hostkey.conf"

# sanlock: the testbed has no hardware watchdog and must not reboot guests through one.
# TESTBED ONLY: a production node keeps the default (use_watchdog = 1, wdmd + a watchdog).
mkdir -p "$ROOT/etc/sanlock"
cat >"$ROOT/etc/sanlock/sanlock.conf" <<'EOF'
# cowstack testbed only: no watchdog device in the qemu guests.
# Production nodes keep sanlock's default use_watchdog = 1.
use_watchdog = 0
EOF

: >"$ROOT/etc/fstab"
echo testbed >"$ROOT/etc/hostname"
: >"$ROOT/etc/resolv.conf"   # no DNS: guests talk to 10.0.2.2 only
: >"$ROOT/etc/machine-id"    # written per boot by /init
rm -f "$ROOT/var/lib/dbus/machine-id"
ln -sf /etc/machine-id "$ROOT/var/lib/dbus/machine-id"

# /dev/console must exist in the initramfs for /init to get a console
mkdir -p "$ROOT/dev"
[ -c "$ROOT/dev/console" ] || mknod -m 600 "$ROOT/dev/console" c 5 1
[ -c "$ROOT/dev/null" ] || mknod -m 666 "$ROOT/dev/null" c 1 3

# ---------------------------------------------------------------- slimming
log "slimming rootfs"
chroot "$ROOT" dpkg-query -W -f '${Package}\t${Version}\n' >"$OUT/dpkg.lst"
rm -rf "$ROOT"/usr/share/{doc,man,info,lintian,linda,bug}/* \
  "$ROOT"/var/cache/apt/* "$ROOT"/var/lib/apt/lists/* \
  "$ROOT"/var/cache/debconf/*-old "$ROOT"/var/log/* \
  "$ROOT"/debootstrap
# qemu (migration tests) needs only qemu-system-x86_64 and the PC firmware: drop the i386 and
# microvm builds and the firmware of other machines.
rm -f "$ROOT"/usr/bin/qemu-system-i386 "$ROOT"/usr/bin/qemu-system-x86_64-microvm
find "$ROOT/usr/share/qemu" -maxdepth 1 -type f \( -name 'edk2-*' -o -name 'openbios-*' -o -name 'u-boot*' \
  -o -name 'slof.bin' -o -name 'skiboot.lid' -o -name 'opensbi-*' -o -name 'hppa-*' -o -name 's390-*' \
  -o -name 'qemu_vga.ndrv' -o -name 'npcm7xx_*' -o -name 'palcode-*' -o -name 'petalogix-*' \) -delete 2>/dev/null || true
find "$ROOT/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name 'locale.alias' -exec rm -rf {} + 2>/dev/null || true

# ---------------------------------------------------------------- initramfs
log "packing initramfs ($(du -sh --apparent-size "$ROOT" | cut -f1) rootfs)"
(cd "$ROOT" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc --quiet) >"$OUT/initramfs.cpio"
log "initramfs.cpio $(du -h --apparent-size "$OUT/initramfs.cpio" | cut -f1)"

unmount_all
rm -rf "$WORK"
log "done"
