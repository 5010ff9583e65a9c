//! What the guest runs, chosen by name: `heartbeat` (the default, busybox only), `idle`,
//! `redis` and `compile` (programs from Debian 12's packages), and `churn` (busybox only,
//! a guest no migration converges on by itself). Every workload prints the
//! same console markers ([`READY`](super::READY), heartbeats, `PAGEWIRE-CHECK ok|FAIL`),
//! a heartbeat per round and a check in every round once it has something to compare, so
//! the migration demo verifies any of them the same way.

use std::fmt;
use std::str::FromStr;

use super::initramfs::{rotating_files, ticker, INIT as HEARTBEAT_INIT};

/// A guest workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Workload {
    /// Rewrites 1 MiB tmpfs files as fast as it can and checks each eight rounds later.
    Heartbeat,
    /// A booted system that only wakes every 0.5 s to check a file it wrote at boot.
    Idle,
    /// redis-server filled and updated by redis-benchmark, known keys re-read each round.
    Redis,
    /// gcc compiling generated C units one per round; each object and the linked
    /// program's output must come out the same every time.
    Compile,
    /// Rewrites 16 MiB of tmpfs files with random bytes as fast as it can and checks each
    /// four rounds later: it dirties more than 100 Mbit/s carries, compressed or not, so
    /// no migration's passes shrink and a stop policy must decide when to stop.
    Churn,
    /// Boots from a root disk and writes files to it, each round synced and read back
    /// from the disk; built by `disk_guest::build` only, so it is not among
    /// [`Workload::ALL`].
    Disk,
}

impl Workload {
    pub const ALL: [Workload; 5] = [
        Workload::Heartbeat,
        Workload::Idle,
        Workload::Redis,
        Workload::Compile,
        Workload::Churn,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Workload::Heartbeat => "heartbeat",
            Workload::Idle => "idle",
            Workload::Redis => "redis",
            Workload::Compile => "compile",
            Workload::Churn => "churn",
            Workload::Disk => "disk",
        }
    }

    /// Guest RAM, MiB: room for the unpacked packages (the initramfs lives in RAM) and the
    /// workload's own memory, measured by booting (see docs/TUNNEL.md).
    pub fn mem_mib(self) -> u64 {
        match self {
            Workload::Heartbeat | Workload::Idle | Workload::Churn | Workload::Disk => 128,
            Workload::Redis => 256,
            Workload::Compile => 512,
        }
    }

    /// Debian 12 packages unpacked into the guest (their dependencies come along).
    pub fn packages(self) -> &'static [&'static str] {
        match self {
            Workload::Heartbeat | Workload::Idle | Workload::Churn | Workload::Disk => &[],
            Workload::Redis => &["redis-server", "redis-tools"],
            Workload::Compile => &["gcc-12", "libc6-dev"],
        }
    }

    /// The guest's `/init`.
    pub fn init_script(self) -> &'static str {
        match self {
            Workload::Heartbeat => HEARTBEAT_INIT,
            Workload::Idle => IDLE_INIT,
            Workload::Redis => REDIS_INIT,
            Workload::Compile => COMPILE_INIT,
            Workload::Churn => CHURN_INIT,
            Workload::Disk => DISK_INIT,
        }
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Workload {
    type Err = String;

    fn from_str(s: &str) -> Result<Workload, String> {
        Workload::ALL
            .into_iter()
            .find(|w| w.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Workload::ALL.iter().map(|w| w.name()).collect();
                format!("no workload '{s}' (one of: {})", names.join(", "))
            })
    }
}

/// Mounts and the search paths for programs unpacked from packages (no ld.so.cache).
macro_rules! with_prelude {
    ($($body:tt)*) => {
        concat!(
            r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t devtmpfs dev /dev
mount -t sysfs sys /sys
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
export LD_LIBRARY_PATH=/lib/x86_64-linux-gnu:/usr/lib/x86_64-linux-gnu
export HOME=/tmp
"#,
            $($body)*
        )
    };
}

/// A reference file written at boot, its md5 kept in the shell; each 0.5 s the file is read
/// back and compared.
const IDLE_INIT: &str = with_prelude!(
    r#"seq 1 20000 > /tmp/idle-reference
want=$(md5sum < /tmp/idle-reference)
echo "pagewire-memory: $(grep MemAvailable /proc/meminfo)"
"#,
    ticker!(),
    r#"echo PAGEWIRE-GUEST-READY
i=0
while :; do
  sleep 0.5
  i=$((i+1))
  got=$(md5sum < /tmp/idle-reference)
  if [ "$got" = "$want" ]; then
    echo "PAGEWIRE-CHECK ok $i"
  else
    echo "PAGEWIRE-CHECK FAIL $i /tmp/idle-reference: md5 ${got%% *}, written ${want%% *}"
  fi
  echo "PAGEWIRE-HEARTBEAT $i"
done
"#
);

/// redis-server on loopback without persistence; 64 known keys of ~300 bytes written
/// first; each round redis-benchmark SETs and GETs 300-byte values over 100 000 random keys
/// and LPUSHes onto a list (trimmed to 20 000 so memory stays bounded), then the known
/// keys are read back with one MGET and compared with what was written.
const REDIS_INIT: &str = with_prelude!(
    r#"ifconfig lo 127.0.0.1 up
redis-server --daemonize yes --save '' --appendonly no --bind 127.0.0.1 \
  --protected-mode no --dir /tmp --logfile /tmp/redis.log
n=0
until [ "$(redis-cli ping 2>&1)" = PONG ]; do
  n=$((n+1))
  if [ $n -gt 150 ]; then
    echo "PAGEWIRE-CHECK FAIL 0 redis-server did not answer: $(tail -n 2 /tmp/redis.log 2>&1)"
    exit 1  # init exits: the kernel panics and QEMU stops (-no-reboot)
  fi
  sleep 0.2
done
pad=$(printf '%0280d' 0)
keys=""
j=0
while [ $j -lt 64 ]; do keys="$keys pagewire:check:$j"; j=$((j+1)); done
values() { j=0; while [ $j -lt 64 ]; do echo "pagewire-$j-$pad"; j=$((j+1)); done; }
values | { j=0; while read -r v; do echo "SET pagewire:check:$j $v"; j=$((j+1)); done; } \
  | redis-cli > /dev/null
want=$(values | md5sum)
echo "pagewire-memory: $(grep MemAvailable /proc/meminfo)"
"#,
    ticker!(),
    r#"echo PAGEWIRE-GUEST-READY
i=0
while :; do
  i=$((i+1))
  if ! redis-benchmark -q -n 3000 -r 100000 -d 300 -P 8 -t set,get,lpush > /tmp/bench.out 2>&1; then
    echo "PAGEWIRE-CHECK FAIL $i redis-benchmark: $(tail -n 1 /tmp/bench.out)"
  fi
  redis-cli LTRIM mylist 0 19999 > /dev/null
  got=$(redis-cli MGET $keys | md5sum)
  if [ "$got" = "$want" ]; then
    echo "PAGEWIRE-CHECK ok $i"
  else
    echo "PAGEWIRE-CHECK FAIL $i known keys: md5 ${got%% *}, written ${want%% *}"
  fi
  [ $((i % 10)) = 0 ] && echo "pagewire-redis round $i: $(redis-cli DBSIZE) keys, $(redis-cli INFO memory | grep '^used_memory_human' | tr -d '\r')"
  echo "PAGEWIRE-HEARTBEAT $i"
done
"#
);

/// Four generated C units of ~430 lines (switches, loops over local arrays, calls
/// between functions: work for gcc's optimiser), compiled with `gcc -O2` one per round (~5.7 s under TCG on this project's
/// machine: bigger units made rounds of ~40 s, too slow for the demo's checks); the
/// program is linked each round and run. From the second build of each unit on, its
/// object must match the first build byte for byte and the program's output must match
/// its first output.
const COMPILE_INIT: &str = with_prelude!(
    r##"UNITS=4
FUNCS=24
CC=gcc-12
gen() {
  awk -v u=$1 -v n=$FUNCS 'BEGIN {
    print "#include <stdint.h>"
    print "struct acc { uint64_t a, b; uint32_t c[8]; };"
    print "static inline uint64_t mix(uint64_t x, int s) { return (x << s) ^ (x >> (64 - s)) ^ 0x9e3779b97f4a7c15ull; }"
    for (f = 0; f < n; f++) {
      m = 8 + f % 24
      printf "static uint64_t f%d(uint64_t x, struct acc *p) {\n", f
      printf "  uint64_t t[%d];\n", m
      printf "  for (int i = 0; i < %d; i++) t[i] = mix(x + i * %d, %d);\n", m, 2 * f + 1, 1 + f % 31
      printf "  for (int r = 0; r < %d; r++) {\n", 2 + f % 7
      printf "    switch ((x ^ r) %% 6) {\n"
      for (c = 0; c < 6; c++)
        printf "    case %d: x = mix(x + t[(r + %d) %% %d], %d) * %d; p->c[%d] += (uint32_t)x; break;\n", c, c * 3, m, 1 + (f + c) % 29, 2 * c + 3, c % 8
      printf "    }\n"
      printf "    if (x & %d) p->a += x; else p->b ^= x >> %d;\n", 1 + f % 64, 1 + f % 13
      printf "  }\n"
      if (f > 0) printf "  if (x %% %d == 0) x = f%d(x / 2, p);\n", 5 + f % 11, f - 1
      printf "  return x + p->a - p->b;\n}\n"
    }
    printf "uint64_t unit%d(uint64_t x) {\n  struct acc s = {0};\n", u
    for (f = 0; f < n; f++) printf "  x = f%d(x, &s);\n", f
    printf "  for (int i = 0; i < 8; i++) x ^= s.c[i];\n  return x;\n}\n"
  }' > u$1.c
}
mkdir -p /tmp/build
cd /tmp/build
proto=""
calls=""
k=0
while [ $k -lt $UNITS ]; do
  gen $k
  proto="$proto uint64_t unit$k(uint64_t);"
  calls="$calls x = unit$k(x); printf(\"%016llx\\n\", (unsigned long long)x);"
  k=$((k+1))
done
printf '#include <stdio.h>\n#include <stdint.h>\n%s\nint main(void) { uint64_t x = 12345; %s return 0; }\n' \
  "$proto" "$calls" > main.c
if ! $CC -O2 -c main.c -o main.o 2> /tmp/gcc.err; then
  echo "PAGEWIRE-CHECK FAIL 0 gcc main.c: $(tail -n 1 /tmp/gcc.err)"
  exit 1  # init exits: the kernel panics and QEMU stops (-no-reboot)
fi
echo "pagewire-compile: $UNITS units of $(wc -l < u0.c) lines"
echo "pagewire-memory: $(grep MemAvailable /proc/meminfo)"
"##,
    ticker!(),
    r##"echo PAGEWIRE-GUEST-READY
i=0
while :; do
  i=$((i+1))
  k=$((i % UNITS))
  bad=""
  if $CC -O2 -c u$k.c -o u$k.new 2> /tmp/gcc.err; then
    mv u$k.new u$k.o
    s=$(md5sum < u$k.o)
    eval "first=\$obj$k"
    if [ -z "$first" ]; then
      eval "obj$k='$s'"
    elif [ "$s" != "$first" ]; then
      bad="u$k.o md5 ${s%% *}, first build ${first%% *}"
    fi
  else
    bad="gcc u$k.c: $(tail -n 1 /tmp/gcc.err)"
  fi
  if [ $i -ge $UNITS ] && [ -z "$bad" ]; then
    if $CC -o prog main.o u*.o 2> /tmp/gcc.err; then
      out=$(./prog | md5sum)
      if [ -z "$output" ]; then
        output=$out
      elif [ "$out" != "$output" ]; then
        bad="program output md5 ${out%% *}, first ${output%% *}"
      fi
    else
      bad="link: $(tail -n 1 /tmp/gcc.err)"
    fi
  fi
  if [ -n "$bad" ]; then
    echo "PAGEWIRE-CHECK FAIL $i $bad"
  elif [ $i -gt $UNITS ]; then
    echo "PAGEWIRE-CHECK ok $i"
  fi
  echo "PAGEWIRE-HEARTBEAT $i"
done
"##
);

/// Four 4 MiB files in a tmpfs, one rewritten per round with bytes from `/dev/urandom`, its
/// md5sum kept in the shell; each round first checks the file it is about to overwrite,
/// written four rounds earlier. Random bytes leave nothing for any compression or delta to
/// find, so the guest dirties memory that costs its full size on the link: about 26 MB/s
/// under TCG on this project's machine (0.16 s a round), twice what 100 Mbit/s carries.
/// `dd` with one 4 MiB block reads `/dev/urandom` at ~50 MB/s there, `head -c` in small
/// reads at ~17 MB/s (too slow: a guest that dirties less than the link carries converges).
const CHURN_INIT: &str = with_prelude!(
    r#"mkdir -p /dev/shm
mount -t tmpfs -o size=32m shm /dev/shm
echo "pagewire-memory: $(grep MemAvailable /proc/meminfo)"
"#,
    ticker!(),
    rotating_files!(
        4,
        "c",
        "  dd if=/dev/urandom of=$f bs=4194304 count=1 2> /dev/null\n  s=$(md5sum < $f)\n"
    )
);

/// The disk's `/init`. Each round writes 128 KiB (half text naming the round, half random)
/// to a new file, renames it over one of 16 slots, rewrites the manifest the same way,
/// `sync`s, and checks every file (the four written at boot, the 16 slots) read back from
/// the disk with `O_DIRECT` (past the page cache) against the md5 it took as it wrote
/// them, then sleeps 0.3 s. The sums live in the shell, in guest memory, so after a
/// migration the guest checks the destination's disk against what it wrote at the source.
/// (Dropping the page cache to read from the disk instead refilled it each round and
/// dirtied ~11 MB/s of memory: more than 100 Mbit/s carries, a migration that never
/// converges without compression.)
const DISK_INIT: &str = with_prelude!(
    r#"mkdir -p /data
mount -t tmpfs -o size=16m tmp /tmp
echo "pagewire-disk: $(df -k / | tail -n 1)"
for j in 0 1 2 3; do
  { seq $((j * 100000)) $((j * 100000 + 90000)); head -c 524288 /dev/urandom; } | head -c 1048576 > /data/next
  s=$(md5sum < /data/next)
  mv /data/next /data/ref$j
  eval "ref$j=${s%% *}"
done
"#,
    ticker!(),
    r#"echo PAGEWIRE-GUEST-READY
i=0
while :; do
  i=$((i+1))
  k=$((i % 16))
  { yes "pagewire-disk-$i" | head -c 65536; head -c 65536 /dev/urandom; } > /data/next
  s=$(md5sum < /data/next)
  mv /data/next /data/w$k
  eval "sum$k=${s%% *}"
  : > /data/manifest.next
  for j in 0 1 2 3; do eval "echo \"\$ref$j  /data/ref$j\"" >> /data/manifest.next; done
  j=0
  while [ $j -lt 16 ]; do
    eval "w=\$sum$j"
    [ -n "$w" ] && echo "$w  /data/w$j" >> /data/manifest.next
    j=$((j+1))
  done
  mv /data/manifest.next /data/manifest
  sync
  bad=""
  while read -r want f; do
    got=$(dd if=$f bs=64k iflag=direct 2>/dev/null | md5sum)
    [ "${got%% *}" = "$want" ] || bad="$bad $f"
  done < /data/manifest
  if [ -z "$bad" ]; then
    echo "PAGEWIRE-CHECK ok $i"
  else
    echo "PAGEWIRE-CHECK FAIL $i read back from the disk:$bad differ from what was written"
  fi
  echo "PAGEWIRE-HEARTBEAT $i"
  sleep 0.3
done
"#
);

#[cfg(test)]
mod tests {
    use super::super::initramfs::{CHECK, HEARTBEAT, READY, TICK};
    use super::*;

    #[test]
    fn every_workload_is_found_by_its_name_and_nothing_else_is() {
        for w in Workload::ALL {
            assert_eq!(w.name().parse::<Workload>(), Ok(w));
        }
        let err = "kernel".parse::<Workload>().unwrap_err();
        assert!(
            err.contains("heartbeat, idle, redis, compile, churn"),
            "{err}"
        );
    }

    #[test]
    fn every_script_prints_the_markers_the_console_parses() {
        for w in Workload::ALL {
            let s = w.init_script();
            assert!(s.starts_with("#!/bin/busybox sh\n"), "{w}");
            for marker in [
                READY,
                HEARTBEAT,
                TICK,
                "PAGEWIRE-CHECK ok",
                "PAGEWIRE-CHECK FAIL",
            ] {
                assert!(s.contains(marker), "{w}: {marker}");
            }
            assert!(s.contains(CHECK.trim_end()));
            let ticker = s.find("PAGEWIRE-TICK $t").expect("a ticker");
            assert!(ticker < s.find(READY).unwrap(), "{w}: ticks from READY on");
            assert!(w.mem_mib() >= 128);
        }
    }

    #[test]
    fn workloads_from_packages_find_their_libraries() {
        for w in [Workload::Redis, Workload::Compile] {
            assert!(!w.packages().is_empty());
            assert!(w.init_script().contains("LD_LIBRARY_PATH"), "{w}");
        }
    }
}
