#!/bin/sh
# Why 4k O_DIRECT random writes leave the queue thread: counts ext4's -EAGAIN answers to
# non-blocking writes (a kretprobe on ext4_file_write_iter) and io_uring's hand-offs to io-wq,
# for fio's own io_uring on the image file, kernel loop, ubloop (auto and --copy kernel) and
# kublk --auto_zc (if bench/results/kublk/kublk exists). Run in the 7.3 test VM, as root:
#   ../shared/vm/run-in-vm --kernel ../shared/vm/bzImage-7.3 --scratch 3G --mem 2048 -- sh bench/probe-write-punts.sh
# Trace events are enabled once and never disabled: toggling them under QEMU TCG has crashed
# the guest (an int3 oops while the kernel patches its text), and so, once, did adding kprobes.
cd "$(dirname "$0")/.." || exit 1
IMG=/scratch/p.img
fio --name=fill --filename=$IMG --rw=write --bs=1M --size=1G --ioengine=psync --direct=1 --end_fsync=1 --output-format=terse >/dev/null
T=/sys/kernel/tracing
mount -t tracefs none $T 2>/dev/null
echo 'r:ext4w ext4_file_write_iter ret=$retval' >> $T/kprobe_events || echo "no kprobe"
echo 'r:iomapw iomap_dio_rw ret=$retval' >> $T/kprobe_events || echo "no kprobe iomap"
echo 'ret == 0xfffffffffffffff5' > $T/events/kprobes/ext4w/filter
echo 'ret == 0xfffffffffffffff5' > $T/events/kprobes/iomapw/filter
echo 1 > $T/events/kprobes/enable
echo 1 > $T/events/io_uring/io_uring_queue_async_work/enable
echo 20000 > $T/buffer_size_kb
count() { echo "  punts $(grep -c queue_async_work $T/trace)  ext4 EAGAIN $(grep -c 'ext4w:' $T/trace)  iomap EAGAIN $(grep -c 'iomapw:' $T/trace)"; grep -m2 'ext4w:\|iomapw:' $T/trace; }
run() { echo > $T/trace; fio --name=w --filename=$1 --rw=randwrite --bs=4k --iodepth=32 --ioengine=io_uring --direct=1 --time_based --runtime=4 --norandommap --randrepeat=0 --output-format=terse | awk -F';' '{print "  write iops", $49}'; count; }
echo "== fio io_uring on the image file itself"; run $IMG
echo "== fio io_uring on the image, QD1"; echo > $T/trace; fio --name=w --filename=$IMG --rw=randwrite --bs=4k --iodepth=1 --ioengine=io_uring --direct=1 --time_based --runtime=3 --output-format=terse | awk -F';' '{print "  write iops", $49}'; count
L=$(losetup --direct-io=on --find --show $IMG); echo none > /sys/block/$(basename $L)/queue/scheduler
echo "== kernel loop"; run $L
losetup -d $L
rm -f /tmp/s.json; node bin/ubloop.js serve $IMG --direct-io --json > /tmp/s.json 2>/tmp/s.err & SP=$!
while [ ! -s /tmp/s.json ]; do sleep 1; done
DEV=$(node -e 'const j=JSON.parse(require("fs").readFileSync("/tmp/s.json","utf8").split("\n")[0]);console.log(j.path)')
echo "== ubloop default"; run $DEV
kill $SP; wait $SP
rm -f /tmp/s.json; node bin/ubloop.js serve $IMG --direct-io --copy kernel --json > /tmp/s.json 2>/tmp/s.err & SP=$!
while [ ! -s /tmp/s.json ]; do sleep 1; done
DEV=$(node -e 'const j=JSON.parse(require("fs").readFileSync("/tmp/s.json","utf8").split("\n")[0]);console.log(j.path)')
echo "== ubloop --copy kernel"; run $DEV
kill $SP; wait $SP
[ -x bench/results/kublk/kublk ] || { echo "(no kublk: bench/build-kublk.sh builds it)"; exit 0; }
K=$(bench/results/kublk/kublk add -t loop -q 1 -d 128 --auto_zc $IMG | sed -n 's/^dev id \([0-9]*\):.*/\1/p')
echo "== kublk auto_zc"; run /dev/ublkb$K
bench/results/kublk/kublk del -n $K
echo "== fio io_uring on the image file again"; run $IMG
cat /proc/mounts | grep scratch
