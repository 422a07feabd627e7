#!/bin/bash
# Turns a fresh PID + mount namespace into a small systemd machine.
#
# The harness starts this script as PID 1 of the new namespaces:
#   unshare --pid --mount --uts --ipc --fork --kill-child --propagation private \
#     bash boot.sh DIR CGROUP [UNIT-TO-MASK...]
# DIR is the host's scratch directory of this sandbox (its "mnt" is the mount
# point, "console.log" receives systemd's console); CGROUP is the cgroup (v2)
# the harness made for this sandbox, shown as the sandbox's /sys/fs/cgroup.
#
# It builds the root, prints "ready <pid as the host sees it>", waits for the
# harness to move it into CGROUP, write the test's files and answer "boot",
# then becomes systemd.
# Every mount below lives in this private mount namespace only; where a kernel
# file system is shared with the host, only mount-level flags are changed
# (bind, remount,bind,ro): a plain remount would change the host's superblock.
set -euo pipefail

dir=$1
cgroup=$2
shift 2
root=$dir/mnt/root

# A throwaway copy of the host: the host's root is the lower layer, every
# write goes to a tmpfs that vanishes with the namespace.
mount -t tmpfs -o mode=0755 sdsandbox "$dir/mnt"
mkdir "$dir/mnt/upper" "$dir/mnt/work" "$root"
mount -t overlay -o "lowerdir=/,upperdir=$dir/mnt/upper,workdir=$dir/mnt/work" sdsandbox "$root"

# /proc of the new PID namespace; /proc/sys read-only, so that systemd and
# systemd-sysctl leave the host's kernel settings alone.
mount -t proc proc "$root/proc"
mount --bind "$root/proc/sys" "$root/proc/sys"
mount -o remount,bind,ro "$root/proc/sys"

# /sys read-only, without the host's /sys/fs/cgroup (on a hybrid host that is a
# tmpfs systemd would remount read-only for everyone). systemd gets its own
# cgroup v2 subtree alone, runs in unified mode, and builds its tree there.
mount --bind /sys "$root/sys"
mount -o remount,bind,ro "$root/sys"
mount --bind "$cgroup" "$root/sys/fs/cgroup"

# A private /dev with the usual device nodes, so that nothing systemd creates
# there (/dev/log, /dev/initctl, ...) lands in the host's /dev, and /dev/kmsg
# (the host's kernel log) is absent.
mount -t tmpfs -o mode=0755,nosuid dev "$root/dev"
for node in null zero full random urandom tty; do
	touch "$root/dev/$node"
	mount --bind "/dev/$node" "$root/dev/$node"
done
mkdir "$root/dev/pts" "$root/dev/shm"
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620,gid=5 devpts "$root/dev/pts"
ln -s pts/ptmx "$root/dev/ptmx"
mount -t tmpfs -o mode=1777,nosuid,nodev shm "$root/dev/shm"
ln -s /proc/self/fd "$root/dev/fd"
ln -s /proc/self/fd/0 "$root/dev/stdin"
ln -s /proc/self/fd/1 "$root/dev/stdout"
ln -s /proc/self/fd/2 "$root/dev/stderr"
# Whatever systemd writes to the console goes to a file the harness can show.
touch "$root/dev/console" "$dir/console.log"
mount --bind "$dir/console.log" "$root/dev/console"

mount -t tmpfs -o mode=0755,nosuid,nodev run "$root/run"
mount -t tmpfs -o mode=1777,nosuid,nodev tmp "$root/tmp"

mkdir -p "$root/etc/systemd/system"
for unit in "$@"; do
	ln -sf /dev/null "$root/etc/systemd/system/$unit"
done

# /proc here is still the host's, so /proc/self/stat holds our host pid; read
# it with a builtin, or it would be the pid of a child process.
read -r pid _ </proc/self/stat
echo "ready $pid"
read -r reply
[ "$reply" = boot ]

cd "$root"
mkdir .oldroot
pivot_root . .oldroot
umount -l /.oldroot
rmdir /.oldroot
export container=other
# A cgroup namespace rooted at CGROUP (we are in it by now), so that systemd
# finds itself at "/" of the /sys/fs/cgroup it sees. basic.target is enough:
# tests start their units by hand.
exec unshare --cgroup /lib/systemd/systemd --system --unit=basic.target </dev/null >/dev/console 2>&1
