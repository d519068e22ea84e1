#!/usr/bin/env bash
# Gives /dev/kvm the owner and mode udev gives it on a Debian host (root:kvm 0660), on
# machines without udev (containers). Without it, libvirtd (root) finds KVM usable while
# its capability probe (run as libvirt-qemu, a member of group kvm) does not, so libvirtd
# throws its capabilities cache away and probes QEMU again on every call: 3-30 s each.
set -u
[ -c /dev/kvm ] || exit 0
getent group kvm >/dev/null 2>&1 || exit 0
[ "$(stat -c '%G %a' /dev/kvm)" = "kvm 660" ] && exit 0
if [ "$(id -u)" != 0 ]; then
    echo "kvm-device: /dev/kvm is not root:kvm 0660 and only root can change it" >&2
    exit 0
fi
chgrp kvm /dev/kvm && chmod 0660 /dev/kvm
echo "kvm-device: /dev/kvm set to root:kvm 0660, as udev does"
