/*
 * migrate.c - a VMM-shaped live migration with libpagewire.
 *
 * The source process owns a "guest RAM" buffer and a dirty bitmap. A simulated guest keeps
 * writing to a hot working set (and now and then elsewhere) while the source runs pre-copy
 * iterations: collect and clear the dirty bitmap, encode the dirty pages, send the stream
 * over a socket, end the iteration, ask the stop policy. When the policy says stop, the
 * guest is paused, the last dirty pages and the vCPU state go out, and the stream ends.
 *
 * The destination process reads the stream frame by frame, decodes straight into its own
 * RAM buffer, and at the end verifies that its RAM equals the source's (the source RAM is
 * in a shared mapping only so that this demo can check it) and that the vCPU state arrived.
 *
 * With a third argument `zstd` or `zstd:LEVEL` (a library installed with
 * PAGEWIRE_FEATURES=zstd), the stream crosses the socket through zstd: the encoder's LZ4 is
 * off, pagewire_zstd_out compresses what it writes, flushed at each iteration's end, and the
 * destination pushes what the socket gives into pagewire_zstd_in and reads frames from
 * what comes out.
 *
 * Build:  cc -o migrate migrate.c $(pkg-config --cflags --libs pagewire)
 * Run:    ./migrate [guest-MiB] [xen-classic|xen-today|downtime|smart-stop] [zstd[:LEVEL]]
 */
#define _DEFAULT_SOURCE
#include <pagewire.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096u
#define VCPU_STATE_TAG 0x55504376u /* "vCPU" */

/* Stops the program with a message if a pagewire call failed. */
static void must(pagewire_result r, const char *what) {
    if (r == PAGEWIRE_OK)
        return;
    char msg[256];
    pagewire_last_error_message(msg, sizeof msg, NULL);
    fprintf(stderr, "%s: %s: %s\n", what, pagewire_result_name(r), msg);
    exit(1);
}

static void *map(size_t len, int shared) {
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
                   (shared ? MAP_SHARED : MAP_PRIVATE) | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        perror("mmap");
        exit(1);
    }
    return p;
}

static void write_all(int fd, const uint8_t *p, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            perror("write");
            exit(1);
        }
        p += w;
        n -= (size_t)w;
    }
}

/* Returns 0 at a clean end of file before the first byte, 1 when `n` bytes were read. */
static int read_all(int fd, uint8_t *p, size_t n) {
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, p + got, n - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            perror("read");
            exit(1);
        }
        if (r == 0) {
            if (got == 0)
                return 0;
            fprintf(stderr, "destination: stream cut inside a frame\n");
            exit(1);
        }
        got += (size_t)r;
    }
    return 1;
}

/* ------------------------------------------------------------------ the link */

/* The source's side of the socket: stream bytes as they are, or through zstd. */
typedef struct {
    int fd;
    uint64_t bytes; /* on the socket */
#ifdef PAGEWIRE_ZSTD
    pagewire_zstd_out *z;
#endif
} link_out;

static void link_send(link_out *l, const uint8_t *p, size_t n) {
#ifdef PAGEWIRE_ZSTD
    if (l->z) {
        const uint8_t *ready = NULL;
        size_t len = 0;
        must(pagewire_zstd_out_write(l->z, p, n, &ready, &len), "zstd_out_write");
        p = ready;
        n = len;
    }
#endif
    write_all(l->fd, p, n);
    l->bytes += n;
}

/* Where the destination must be able to decode everything sent so far (an iteration's
 * end, the stream's end). */
static void link_flush(link_out *l, int end) {
#ifdef PAGEWIRE_ZSTD
    if (l->z) {
        const uint8_t *ready = NULL;
        size_t len = 0;
        must(end ? pagewire_zstd_out_finish(l->z, &ready, &len)
                 : pagewire_zstd_out_flush(l->z, &ready, &len),
             "zstd_out_flush");
        write_all(l->fd, ready, len);
        l->bytes += len;
    }
#else
    (void)l;
    (void)end;
#endif
}

/* The destination's side: exactly `n` stream bytes, from the socket or through zstd.
 * Returns 0 at a clean end before the first byte, like read_all. */
typedef struct {
    int fd;
#ifdef PAGEWIRE_ZSTD
    pagewire_zstd_in *z;
    uint8_t in[65536]; /* socket bytes not yet taken by zstd */
    size_t in_at, in_len;
    int ended;
#endif
} link_in;

static int link_read(link_in *l, uint8_t *p, size_t n) {
#ifdef PAGEWIRE_ZSTD
    if (l->z) {
        size_t got = 0;
        while (got < n) {
            if (l->ended) {
                if (got == 0)
                    return 0;
                fprintf(stderr, "destination: stream cut inside a frame\n");
                exit(1);
            }
            if (l->in_at == l->in_len) {
                ssize_t r = read(l->fd, l->in, sizeof l->in);
                if (r < 0 && errno == EINTR)
                    continue;
                if (r <= 0) {
                    fprintf(stderr, "destination: the link ended inside the zstd stream\n");
                    exit(1);
                }
                l->in_at = 0;
                l->in_len = (size_t)r;
            }
            size_t used = 0, made = 0;
            bool ended = false;
            must(pagewire_zstd_in_feed(l->z, l->in + l->in_at, l->in_len - l->in_at, p + got,
                                       n - got, &used, &made, &ended, NULL),
                 "zstd_in_feed");
            l->in_at += used;
            got += made;
            l->ended = ended;
        }
        return 1;
    }
#endif
    return read_all(l->fd, p, n);
}

static uint64_t now_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000u + (uint64_t)t.tv_nsec / 1000u;
}

/* ------------------------------------------------------------------ the guest */

typedef struct {
    uint8_t *ram;
    uint64_t *dirty; /* one bit per page, like KVM's dirty log */
    size_t pages, hot;
    uint64_t rng;
} guest;

static uint64_t rnd(guest *g) {
    g->rng ^= g->rng << 13;
    g->rng ^= g->rng >> 7;
    g->rng ^= g->rng << 17;
    return g->rng;
}

static void touch(guest *g, size_t pfn) {
    uint8_t *p = g->ram + pfn * PAGE;
    uint64_t v = rnd(g);
    memcpy(p + (v % (PAGE / 8)) * 8, &v, 8);
    p[v % PAGE] ^= 0x5a;
    g->dirty[pfn / 64] |= 1ull << (pfn % 64);
}

/* Boot: some text, some data, lots of zero pages. */
static void guest_boot(guest *g) {
    for (size_t pfn = 0; pfn < g->pages; pfn++) {
        uint8_t *p = g->ram + pfn * PAGE;
        switch (pfn % 4) {
        case 0:
            break; /* zero page */
        case 1:
            for (size_t i = 0; i < PAGE; i++)
                p[i] = (uint8_t)"kernel text, libc, page tables and heaps "[(i + pfn) % 41];
            break;
        case 2:
            for (size_t i = 0; i < PAGE; i += 8) {
                uint64_t v = rnd(g);
                memcpy(p + i, &v, 8);
            }
            break;
        default:
            memset(p, (int)(pfn & 0xff), 256);
        }
    }
}

/* The guest runs for a while: writes to its hot set and, rarely, elsewhere. */
static void guest_run(guest *g, size_t writes) {
    for (size_t i = 0; i < writes; i++)
        touch(g, rnd(g) % 16 == 0 ? rnd(g) % g->pages : rnd(g) % g->hot);
}

/* ------------------------------------------------------------------ the source */

static int policy_init(pagewire_policy *p, const char *name, size_t pages) {
    if (strcmp(name, PAGEWIRE_POLICY_NAME_XEN_CLASSIC) == 0)
        return pagewire_policy_xen_classic(p, pages) == PAGEWIRE_OK;
    if (strcmp(name, PAGEWIRE_POLICY_NAME_XEN_TODAY) == 0)
        return pagewire_policy_xen_today(p) == PAGEWIRE_OK;
    if (strcmp(name, "downtime") == 0 || strcmp(name, PAGEWIRE_POLICY_NAME_DOWNTIME_LIMIT) == 0)
        return pagewire_policy_downtime_limit(p, 30000, PAGE) == PAGEWIRE_OK; /* 30 ms */
    if (strcmp(name, PAGEWIRE_POLICY_NAME_SMART_STOP) == 0)
        return pagewire_policy_smart_stop(p, PAGEWIRE_SMART_STOP_DEFAULT_WINDOW) == PAGEWIRE_OK;
    return 0;
}

/* Sends every page whose dirty bit is set and clears the bits; returns the pages sent. */
static size_t send_dirty(guest *g, pagewire_encoder *enc, uint8_t *out, size_t out_len,
                         link_out *link, int guest_running, uint64_t *bytes) {
    enum { BATCH = 256 };
    pagewire_page_in batch[BATCH];
    size_t sent = 0, count = 0;
    uint64_t *snapshot = calloc((g->pages + 63) / 64, 8);
    /* "get dirty log": take the bitmap and clear it atomically (with a paused vCPU or an
     * ioctl in a real VMM) */
    memcpy(snapshot, g->dirty, (g->pages + 63) / 64 * 8);
    memset(g->dirty, 0, (g->pages + 63) / 64 * 8);
    for (size_t pfn = 0; pfn <= g->pages; pfn++) {
        int last = pfn == g->pages;
        if (!last && (snapshot[pfn / 64] >> (pfn % 64) & 1)) {
            batch[count].pfn = pfn;
            batch[count].data = g->ram + pfn * PAGE;
            count++;
        }
        if (count == BATCH || (last && count > 0)) {
            for (size_t at = 0; at < count;) {
                size_t done = 0, written = 0;
                must(pagewire_encoder_encode_pages(enc, batch + at, count - at, out, out_len,
                                                   &done, &written),
                     "encode_pages");
                link_send(link, out, written);
                *bytes += written;
                at += done;
            }
            sent += count;
            count = 0;
            if (guest_running)
                guest_run(g, 40); /* the guest keeps running while we send */
        }
    }
    free(snapshot);
    return sent;
}

static size_t popcount_bitmap(const uint64_t *b, size_t words) {
    size_t n = 0;
    for (size_t i = 0; i < words; i++)
        n += (size_t)__builtin_popcountll(b[i]);
    return n;
}

static int source(int fd, uint8_t *ram, size_t pages, const char *policy_name, int zstd_level) {
    guest g = {ram, calloc((pages + 63) / 64, 8), pages, pages / 16, 0x2545f4914f6cdd1dull};
    guest_boot(&g);
    for (size_t pfn = 0; pfn < pages; pfn++) /* the first pass sends everything */
        g.dirty[pfn / 64] |= 1ull << (pfn % 64);

    pagewire_config cfg;
    must(pagewire_config_default(&cfg), "config_default");
    cfg.cache_pages = (uint32_t)(pages / 2); /* both ends pay the cache in RAM */
    cfg.stream_id = (uint32_t)getpid();
    link_out link = {.fd = fd};
#ifdef PAGEWIRE_ZSTD
    if (zstd_level != 0) {
        cfg.lz4 = 0; /* zstd over the stream finds more in frames LZ4 has not touched */
        must(pagewire_zstd_out_new(zstd_level, &link.z), "zstd_out_new");
    }
#else
    (void)zstd_level;
#endif
    pagewire_sizes sz;
    must(pagewire_config_sizes(&cfg, &sz), "config_sizes");
    /* The encoder lives in memory the VMM maps (it could be hugepage-backed). */
    void *storage = map(sz.encoder_storage, 0);
    pagewire_encoder *enc = NULL;
    must(pagewire_encoder_init(&cfg, storage, sz.encoder_storage, &enc), "encoder_init");
    size_t out_len = 4 * sz.max_output; /* room for a few frames per batch call */
    uint8_t *out = malloc(out_len);

    pagewire_policy policy;
    if (!policy_init(&policy, policy_name, pages)) {
        fprintf(stderr, "unknown policy %s\n", policy_name);
        return 1;
    }

    size_t written = 0;
    for (uint32_t it = 1;; it++) {
        uint64_t t0 = now_us(), bytes = 0;
        size_t sent = send_dirty(&g, enc, out, out_len, &link, 1, &bytes);
        must(pagewire_encoder_end_iteration(enc, out, out_len, &written), "end_iteration");
        link_send(&link, out, written);
        link_flush(&link, 0);
        bytes += written;
        size_t dirtied = popcount_bitmap(g.dirty, (pages + 63) / 64);
        pagewire_iteration_report r;
        memset(&r, 0, sizeof r);
        r.iteration = it;
        r.pages_sent = sent;
        r.pages_dirtied = dirtied;
        r.pages_remaining = dirtied;
        r.bytes_sent = bytes;
        r.elapsed_us = now_us() - t0;
        r.bandwidth_bytes_per_s = 12500000; /* a 100 Mbit/s WAN link */
        pagewire_decision d;
        must(pagewire_policy_decide(&policy, &r, &d), "policy_decide");
        printf("source: iteration %u: %zu pages in %llu bytes, %zu dirtied meanwhile -> %s\n",
               it, sent, (unsigned long long)bytes, dirtied,
               d == PAGEWIRE_DECISION_STOP_AND_COPY ? "stop and copy" : "continue");
        if (d == PAGEWIRE_DECISION_STOP_AND_COPY)
            break;
    }

    /* Stop and copy: the guest is paused, so nothing is dirtied any more. */
    uint64_t bytes = 0;
    size_t last = send_dirty(&g, enc, out, out_len, &link, 0, &bytes);
    uint8_t vcpu[512]; /* registers, in a real VMM: KVM_GET_REGS/SREGS/FPU/MSRS... */
    for (size_t i = 0; i < sizeof vcpu; i++)
        vcpu[i] = (uint8_t)(i * 31 + 7);
    must(pagewire_encoder_append_blob(enc, VCPU_STATE_TAG, vcpu, sizeof vcpu, out, out_len,
                                      &written),
         "append_blob");
    link_send(&link, out, written);
    must(pagewire_encoder_finish(enc, out, out_len, &written), "finish");
    link_send(&link, out, written);
    link_flush(&link, 1);
    close(fd);
#ifdef PAGEWIRE_ZSTD
    must(pagewire_zstd_out_free(link.z), "zstd_out_free");
#endif

    pagewire_encoder_stats st;
    must(pagewire_encoder_get_stats(enc, &st), "get_stats");
    printf("source: stop-and-copy sent %zu pages; %llu pages in %llu bytes in all "
           "(%.1f%% of raw; zero %llu, dup %llu, delta %llu, blocks %llu, raw %llu)\n",
           last, (unsigned long long)st.pages, (unsigned long long)st.bytes_out,
           100.0 * (double)st.bytes_out / (double)(st.pages * PAGE),
           (unsigned long long)st.zero.pages, (unsigned long long)st.dup.pages,
           (unsigned long long)st.delta.pages, (unsigned long long)st.blocks.pages,
           (unsigned long long)st.raw.pages);
    printf("source: %llu bytes on the link (%s)\n", (unsigned long long)link.bytes,
           zstd_level ? "zstd" : "the stream as it is");
    must(pagewire_encoder_deinit(enc), "encoder_deinit");
    munmap(storage, sz.encoder_storage);
    free(out);
    free(g.dirty);
    return 0;
}

/* ------------------------------------------------------------------ the destination */

typedef struct {
    uint8_t vcpu[512];
    size_t vcpu_len;
    uint64_t iterations;
    int ended;
} arrivals;

static int on_iteration_end(void *user, uint64_t iteration) {
    (void)iteration;
    ((arrivals *)user)->iterations++;
    return 0;
}

static int on_blob(void *user, uint32_t tag, const uint8_t *data, size_t len) {
    arrivals *a = user;
    if (tag != VCPU_STATE_TAG || len > sizeof a->vcpu)
        return 1; /* unknown state: refuse the stream */
    memcpy(a->vcpu, data, len);
    a->vcpu_len = len;
    return 0;
}

static int on_end(void *user) {
    ((arrivals *)user)->ended = 1;
    return 0;
}

static int destination(int fd, const uint8_t *source_ram, size_t pages, int zstd) {
    static link_in link; /* 64 KiB of socket buffer: not on the stack */
    link.fd = fd;
#ifdef PAGEWIRE_ZSTD
    if (zstd)
        must(pagewire_zstd_in_new(&link.z), "zstd_in_new");
#else
    (void)zstd;
#endif
    uint8_t header[PAGEWIRE_HEADER_LEN];
    if (!link_read(&link, header, sizeof header)) {
        fprintf(stderr, "destination: no stream\n");
        return 1;
    }
    pagewire_config cfg;
    must(pagewire_config_from_header(header, sizeof header, &cfg), "config_from_header");
    pagewire_sizes sz;
    must(pagewire_config_sizes(&cfg, &sz), "config_sizes");
    /* In place: the decoder builds pages directly in guest RAM and reads the pages the
     * stream refers to back from there, so it needs no copy of the cache (a few hundred KB
     * instead of cache_pages * page_size). The guest must not run until the end. */
    size_t storage_len = 0;
    must(pagewire_config_decoder_storage(&cfg, PAGEWIRE_DECODE_IN_PLACE, &storage_len),
         "config_decoder_storage");
    void *storage = map(storage_len, 0);
    pagewire_decoder *dec = NULL;
    size_t used = 0;
    must(pagewire_decoder_open(header, sizeof header, storage, storage_len,
                               PAGEWIRE_DECODE_IN_PLACE, &dec, &used),
         "decoder_open");
    printf("destination: decoder storage %zu bytes in place (%zu with a cache copy)\n",
           storage_len, sz.decoder_storage);

    /* Pages go straight into the destination guest's RAM, one region here (a VMM passes
     * its memory slots); the callbacks get the iteration ends, the vCPU state and the end. */
    uint8_t *ram = map(pages * PAGE, 0);
    pagewire_ram_region region = {0, pages, ram};
    arrivals a = {{0}, 0, 0, 0};
    pagewire_destination into_ram;
    memset(&into_ram, 0, sizeof into_ram);
    into_ram.kind = PAGEWIRE_TO_RAM_REGIONS;
    into_ram.regions = &region;
    into_ram.region_count = 1;
    into_ram.events.user = &a;
    into_ram.events.iteration_end = on_iteration_end;
    into_ram.events.blob = on_blob;
    into_ram.events.end_of_stream = on_end;
    uint8_t *frame = malloc(sz.max_frame);
    while (!a.ended) {
        size_t len = 0, consumed = 0;
        if (!link_read(&link, frame, PAGEWIRE_FRAME_HEADER_LEN))
            break;
        must(pagewire_decoder_frame_len(dec, frame, PAGEWIRE_FRAME_HEADER_LEN, &len), "frame_len");
        link_read(&link, frame + PAGEWIRE_FRAME_HEADER_LEN, len - PAGEWIRE_FRAME_HEADER_LEN);
        must(pagewire_decoder_decode(dec, frame, len, &into_ram, &consumed, NULL), "decode");
    }
    /* Resume the guest only after a complete, verified stream. */
    must(pagewire_decoder_check_complete(dec), "check_complete");
    pagewire_decoder_stats st;
    must(pagewire_decoder_get_stats(dec, &st), "get_stats");
    int same = memcmp(ram, source_ram, pages * PAGE) == 0;
    int vcpu_ok = a.vcpu_len == 512;
    for (size_t i = 0; vcpu_ok && i < a.vcpu_len; i++)
        vcpu_ok = a.vcpu[i] == (uint8_t)(i * 31 + 7);
    printf("destination: %llu pages in %llu frames over %llu iterations; vCPU state %s\n",
           (unsigned long long)st.pages, (unsigned long long)st.frames,
           (unsigned long long)a.iterations, vcpu_ok ? "received" : "MISSING");
    printf("destination: RAM %s source RAM (%zu pages)\n", same ? "equals" : "DIFFERS FROM",
           pages);
    must(pagewire_decoder_close(dec), "decoder_close");
#ifdef PAGEWIRE_ZSTD
    must(pagewire_zstd_in_free(link.z), "zstd_in_free");
#endif
    free(frame);
    return same && vcpu_ok ? 0 : 1;
}

int main(int argc, char **argv) {
    size_t mib = argc > 1 ? (size_t)strtoul(argv[1], NULL, 10) : 32;
    const char *policy = argc > 2 ? argv[2] : "smart-stop";
    const char *compress = argc > 3 ? argv[3] : "";
    size_t pages = mib * 1024 * 1024 / PAGE;
    int zstd_level = 0;
    if (strcmp(compress, "zstd") == 0)
        zstd_level = 3;
    else if (strncmp(compress, "zstd:", 5) == 0)
        zstd_level = atoi(compress + 5);
    if (pages < 64 || (*compress && zstd_level == 0)) {
        fprintf(stderr,
                "usage: %s [guest-MiB >= 1] [xen-classic|xen-today|downtime|smart-stop] "
                "[zstd[:LEVEL]]\n",
                argv[0]);
        return 2;
    }
#ifndef PAGEWIRE_ZSTD
    if (zstd_level != 0) {
        fprintf(stderr, "this libpagewire was built without zstd (install it with "
                        "PAGEWIRE_FEATURES=zstd ffi/install.sh PREFIX)\n");
        return 2;
    }
#endif
    printf("libpagewire %s: migrating a %zu MiB guest, policy %s, %s\n", pagewire_version(), mib,
           policy, zstd_level ? compress : "LZ4 on the frames");
    /* Shared only so that the destination can verify the result at the end. */
    uint8_t *source_ram = map(pages * PAGE, 1);
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) {
        perror("socketpair");
        return 1;
    }
    fflush(stdout); /* or the child would print what is still buffered once more */
    pid_t child = fork();
    if (child < 0) {
        perror("fork");
        return 1;
    }
    if (child == 0) {
        close(sv[0]);
        exit(destination(sv[1], source_ram, pages, zstd_level != 0));
    }
    close(sv[1]);
    int rc = source(sv[0], source_ram, pages, policy, zstd_level);
    int status = 0;
    waitpid(child, &status, 0);
    if (rc != 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "migration FAILED\n");
        return 1;
    }
    printf("migration verified\n");
    return 0;
}
