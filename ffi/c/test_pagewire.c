/*
 * C tests of libpagewire, built by tests/c_api.rs against the static and the shared
 * library, plain and under -fsanitize=address,undefined. Prints one line per test and a
 * closing "N passed, N failed"; exits non-zero on any failure.
 */
#define _POSIX_C_SOURCE 200809L
#include "pagewire.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures;

#define CHECK(cond)                                                                  \
    do {                                                                             \
        if (!(cond)) {                                                               \
            failures++;                                                              \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
        }                                                                            \
    } while (0)

#define CHECK_RC(call, want)                                                       \
    do {                                                                           \
        pagewire_result rc_ = (call);                                              \
        if (rc_ != (pagewire_result)(want)) {                                      \
            char msg_[256];                                                        \
            pagewire_last_error_message(msg_, sizeof msg_, NULL);                  \
            failures++;                                                            \
            fprintf(stderr, "%s:%d: %s returned %s (%s), wanted %s\n", __FILE__,   \
                    __LINE__, #call, pagewire_result_name(rc_), msg_,              \
                    pagewire_result_name(want));                                   \
        }                                                                          \
    } while (0)

#define OK(call) CHECK_RC(call, PAGEWIRE_OK)

#define PAGE 4096u

/* ---------------------------------------------------------------- helpers */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t next_rand(void) {
    uint64_t x = rng_state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return rng_state = x;
}

/* Guest-like page content: zero pages, repeated text, random bytes, copies. */
static void fill_page(uint8_t *ram, size_t pages, size_t pfn) {
    uint8_t *p = ram + pfn * PAGE;
    switch (next_rand() % 5) {
    case 0:
        memset(p, 0, PAGE);
        break;
    case 1:
        for (size_t i = 0; i < PAGE; i++)
            p[i] = (uint8_t)"the quick brown fox jumps over the lazy dog "[(i + pfn) % 44];
        break;
    case 2:
        for (size_t i = 0; i < PAGE; i += 8) {
            uint64_t r = next_rand();
            memcpy(p + i, &r, 8);
        }
        break;
    case 3:
        memcpy(p, ram + (next_rand() % pages) * PAGE, PAGE);
        break;
    default:
        memset(p, 0, PAGE);
        for (size_t i = 0; i < 64; i++)
            p[next_rand() % PAGE] = (uint8_t)next_rand();
    }
}

/* Small writes to a page, as a running guest does. */
static void dirty_page(uint8_t *ram, size_t pages, size_t pfn) {
    uint8_t *p = ram + pfn * PAGE;
    if (next_rand() % 4 == 0) {
        fill_page(ram, pages, pfn);
        return;
    }
    size_t n = 1 + next_rand() % 40;
    for (size_t i = 0; i < n; i++)
        p[next_rand() % PAGE] ^= (uint8_t)(1 + next_rand() % 255);
}

/* A growing byte buffer for a stream. */
typedef struct {
    uint8_t *data;
    size_t len, cap;
} bytes;

static void append(bytes *b, const uint8_t *p, size_t n) {
    if (n == 0)
        return;
    if (b->len + n > b->cap) {
        b->cap = (b->len + n) * 2;
        b->data = realloc(b->data, b->cap);
        if (!b->data) {
            perror("realloc");
            exit(2);
        }
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
}

static pagewire_config small_config(void) {
    pagewire_config cfg;
    if (pagewire_config_default(&cfg) != PAGEWIRE_OK)
        exit(2);
    cfg.cache_pages = 1024;
    cfg.stream_id = 7;
    return cfg;
}

/* Encodes a stream of `pages` pages over `iterations` passes (RAM left in `ram`). */
static bytes make_stream(const pagewire_config *cfg, uint8_t *ram, size_t pages,
                         int iterations) {
    bytes s = {0};
    pagewire_sizes sz;
    pagewire_encoder *enc = NULL;
    OK(pagewire_config_sizes(cfg, &sz));
    OK(pagewire_encoder_new(cfg, &enc));
    uint8_t *out = malloc(sz.max_output);
    size_t n = 0;
    for (size_t pfn = 0; pfn < pages; pfn++)
        fill_page(ram, pages, pfn);
    for (int it = 0; it < iterations; it++) {
        for (size_t pfn = 0; pfn < pages; pfn++) {
            if (it > 0) {
                if (next_rand() % 10)
                    continue;
                dirty_page(ram, pages, pfn);
            }
            OK(pagewire_encoder_encode_page(enc, pfn, ram + pfn * PAGE, PAGE, out,
                                            sz.max_output, &n));
            append(&s, out, n);
        }
        OK(pagewire_encoder_end_iteration(enc, out, sz.max_output, &n));
        append(&s, out, n);
    }
    OK(pagewire_encoder_finish(enc, out, sz.max_output, &n));
    append(&s, out, n);
    OK(pagewire_encoder_free(enc));
    free(out);
    return s;
}

/* What a decoder delivered. */
typedef struct {
    uint8_t *ram;
    size_t pages;
    uint64_t pages_seen, iterations_seen;
    int out_of_order, ended, fail_after;
    uint8_t blob[256];
    size_t blob_len;
    uint32_t blob_tag;
} dest;

static int on_page(void *user, uint64_t pfn, const uint8_t *data, size_t len) {
    dest *d = user;
    if (d->fail_after && d->pages_seen + 1 >= (uint64_t)d->fail_after)
        return 1;
    if (pfn >= d->pages || len != PAGE)
        return -1;
    memcpy(d->ram + pfn * PAGE, data, len);
    d->pages_seen++;
    return 0;
}

static int on_iteration_end(void *user, uint64_t iteration) {
    dest *d = user;
    if (iteration != d->iterations_seen)
        d->out_of_order = 1;
    d->iterations_seen++;
    return 0;
}

static int on_blob(void *user, uint32_t tag, const uint8_t *data, size_t len) {
    dest *d = user;
    if (len > sizeof d->blob)
        return -1;
    memcpy(d->blob, data, len);
    d->blob_len = len;
    d->blob_tag = tag;
    return 0;
}

static int on_end(void *user) {
    ((dest *)user)->ended = 1;
    return 0;
}

static pagewire_sink sink_for(dest *d) {
    pagewire_sink s = {d, on_page, on_iteration_end, on_blob, on_end};
    return s;
}

static const pagewire_sink no_events = {0};

/* Destinations: the callbacks alone, RAM regions, a page table. */
static pagewire_destination to_callbacks(pagewire_sink events) {
    pagewire_destination d;
    memset(&d, 0, sizeof d);
    d.kind = PAGEWIRE_TO_CALLBACKS;
    d.events = events;
    return d;
}

static pagewire_destination to_ram(const pagewire_ram_region *regions, size_t count,
                                   pagewire_sink events) {
    pagewire_destination d = to_callbacks(events);
    d.kind = PAGEWIRE_TO_RAM_REGIONS;
    d.regions = regions;
    d.region_count = count;
    return d;
}

static pagewire_destination to_table(uint8_t *const *table, size_t len, pagewire_sink events) {
    pagewire_destination d = to_callbacks(events);
    d.kind = PAGEWIRE_TO_PAGE_TABLE;
    d.page_table = table;
    d.page_table_len = len;
    return d;
}

/* A decoder for `cfg` in `storage` (NULL: allocated), from the header it would send. */
static pagewire_result open_for(const pagewire_config *cfg, void *storage, size_t storage_len,
                                pagewire_decoder **dec) {
    uint8_t header[PAGEWIRE_HEADER_LEN];
    size_t used = 0;
    OK(pagewire_config_header(cfg, header, sizeof header));
    return pagewire_decoder_open(header, sizeof header, storage, storage_len, 0, dec, &used);
}

/* ---------------------------------------------------------------- tests */

static void test_version(void) {
    CHECK(pagewire_version_number() == PAGEWIRE_VERSION_NUMBER);
    CHECK(strcmp(pagewire_version(), PAGEWIRE_VERSION) == 0);
    CHECK(PAGEWIRE_VERSION_NUMBER ==
          ((PAGEWIRE_VERSION_MAJOR << 16) | (PAGEWIRE_VERSION_MINOR << 8) | PAGEWIRE_VERSION_PATCH));
    CHECK(PAGEWIRE_HEADER_LEN == 32 && PAGEWIRE_FRAME_HEADER_LEN == 20);
}

static void test_every_result_has_a_name(void) {
    static const struct {
        pagewire_result r;
        const char *name;
    } all[] = {
#define R(x) {x, #x}
        R(PAGEWIRE_OK), R(PAGEWIRE_INVALID_CONFIG), R(PAGEWIRE_INSUFFICIENT_STORAGE),
        R(PAGEWIRE_OUTPUT_TOO_SMALL), R(PAGEWIRE_BLOB_TOO_LARGE), R(PAGEWIRE_WRONG_PAGE_LENGTH),
        R(PAGEWIRE_FINISHED), R(PAGEWIRE_BAD_MAGIC), R(PAGEWIRE_UNSUPPORTED_VERSION),
        R(PAGEWIRE_CRC_MISMATCH), R(PAGEWIRE_TRUNCATED), R(PAGEWIRE_WRONG_STREAM),
        R(PAGEWIRE_FRAME_OUT_OF_ORDER), R(PAGEWIRE_MALFORMED), R(PAGEWIRE_LENGTH_OUT_OF_RANGE),
        R(PAGEWIRE_VARINT_OVERFLOW), R(PAGEWIRE_EMPTY_SLOT), R(PAGEWIRE_EVICTED_SLOT),
        R(PAGEWIRE_BAD_DELTA), R(PAGEWIRE_BAD_COMPRESSION), R(PAGEWIRE_ITERATION_OUT_OF_ORDER),
        R(PAGEWIRE_TRAILING_DATA), R(PAGEWIRE_RETIRED_SLOT), R(PAGEWIRE_FOREIGN_PATCH),
        R(PAGEWIRE_PAGE_UNREADABLE), R(PAGEWIRE_OTHER_CODEC_ERROR), R(PAGEWIRE_NULL_ARGUMENT),
        R(PAGEWIRE_BUFFER_TOO_SMALL), R(PAGEWIRE_PANIC), R(PAGEWIRE_INVALID_HANDLE),
        R(PAGEWIRE_INVALID_ARGUMENT), R(PAGEWIRE_PFN_OUT_OF_RANGE), R(PAGEWIRE_CALLBACK_FAILED),
        R(PAGEWIRE_OUT_OF_MEMORY), R(PAGEWIRE_GROUP_FULL), R(PAGEWIRE_BAD_ZSTD_STREAM),
#undef R
    };
    size_t n = sizeof all / sizeof all[0];
    for (size_t i = 0; i < n; i++) {
        CHECK(strcmp(pagewire_result_name(all[i].r), all[i].name) == 0);
        for (size_t j = 0; j < i; j++)
            CHECK(all[i].r != all[j].r);
    }
    size_t named = 0;
    for (uint32_t r = 0; r < 1000; r++)
        named += strcmp(pagewire_result_name(r), "PAGEWIRE_UNKNOWN_RESULT") != 0;
    CHECK(named == n);
    CHECK(strcmp(pagewire_result_name(0xffffffffu), "PAGEWIRE_UNKNOWN_RESULT") == 0);
}

static void test_config_and_sizes(void) {
    pagewire_config cfg;
    OK(pagewire_config_default(&cfg));
    CHECK(cfg.page_size == 4096 && cfg.blocks_per_page == 4 && cfg.cache_pages == 16384);
    CHECK(cfg.frame_bytes == 65536 && cfg.lz4 == 1 && cfg.delta_threshold == 2048);
    OK(pagewire_config_validate(&cfg));

    pagewire_sizes sz;
    OK(pagewire_config_sizes(&cfg, &sz));
    CHECK(sz.encoder_storage > (size_t)cfg.cache_pages * cfg.page_size);
    CHECK(sz.decoder_storage > (size_t)cfg.cache_pages * cfg.page_size);
    CHECK(sz.max_output > sz.max_frame && sz.max_frame > cfg.frame_bytes);
    CHECK(sz.max_blob == cfg.frame_bytes - 32);

    /* a bad field: named in the message, outputs untouched */
    pagewire_config bad = cfg;
    bad.page_size = 5000;
    pagewire_sizes before = {1, 2, 3, 4, 5}, after = before;
    CHECK_RC(pagewire_config_sizes(&bad, &after), PAGEWIRE_INVALID_CONFIG);
    CHECK(memcmp(&before, &after, sizeof before) == 0);
    char msg[256];
    size_t msg_len = 0;
    OK(pagewire_last_error_message(msg, sizeof msg, &msg_len));
    CHECK(strstr(msg, "page_size") != NULL);
    CHECK(msg_len == strlen(msg));
    bad = cfg;
    bad.reserved[1] = 1;
    CHECK_RC(pagewire_config_validate(&bad), PAGEWIRE_INVALID_CONFIG);
    bad = cfg;
    bad.lz4 = 2;
    CHECK_RC(pagewire_config_validate(&bad), PAGEWIRE_INVALID_CONFIG);
    bad = cfg;
    bad.blocks_per_page = 3;
    CHECK_RC(pagewire_config_validate(&bad), PAGEWIRE_INVALID_CONFIG);

    /* the header carries the configuration */
    uint8_t header[PAGEWIRE_HEADER_LEN];
    pagewire_config back;
    cfg.stream_id = 99;
    OK(pagewire_config_header(&cfg, header, sizeof header));
    OK(pagewire_config_from_header(header, sizeof header, &back));
    CHECK(memcmp(&back, &cfg, sizeof cfg) == 0);
    CHECK_RC(pagewire_config_from_header(header, 31, &back), PAGEWIRE_TRUNCATED);
    CHECK_RC(pagewire_config_header(&cfg, header, 31), PAGEWIRE_BUFFER_TOO_SMALL);

    /* the compile-time bounds hold for a spread of configurations */
    static const uint32_t page_sizes[] = {4096, 8192, 65536};
    static const uint8_t bpps[] = {1, 2, 4, 8};
    static const uint32_t caches[] = {1, 3, 64, 1000, 16384};
    for (size_t a = 0; a < 3; a++)
        for (size_t b = 0; b < 4; b++)
            for (size_t c = 0; c < 5; c++) {
                pagewire_config k = cfg;
                k.page_size = page_sizes[a];
                k.blocks_per_page = bpps[b];
                k.cache_pages = caches[c];
                k.delta_threshold = k.page_size / 2;
                k.frame_bytes = k.page_size * 4;
                OK(pagewire_config_sizes(&k, &sz));
                size_t eb = PAGEWIRE_ENCODER_STORAGE_BOUND(k.page_size, k.blocks_per_page,
                                                           k.cache_pages, k.frame_bytes);
                size_t db = PAGEWIRE_DECODER_STORAGE_BOUND(k.page_size, k.cache_pages,
                                                           k.frame_bytes);
                CHECK(eb >= sz.encoder_storage && eb <= 2 * sz.encoder_storage + 4096);
                CHECK(db >= sz.decoder_storage && db <= sz.decoder_storage + 1024);
                CHECK(PAGEWIRE_MAX_OUTPUT_BOUND(k.frame_bytes) >= sz.max_output);
            }
}

/* The round trip: a few thousand pages over four passes, encoded one page at a time and
 * in batches, decoded with callbacks (streamed in odd-sized chunks) and into RAM. */
static void test_round_trip(void) {
    enum { PAGES = 3000 };
    pagewire_config cfg = small_config();
    pagewire_sizes sz;
    OK(pagewire_config_sizes(&cfg, &sz));

    uint8_t *src = calloc(PAGES, PAGE);
    uint8_t *enc_mem = malloc(sz.encoder_storage + 3);
    uint8_t *out = malloc(2 * sz.max_output);
    bytes stream = {0};
    pagewire_encoder *enc = NULL;
    /* storage of odd alignment on purpose */
    OK(pagewire_encoder_init(&cfg, enc_mem + 3, sz.encoder_storage, &enc));

    for (size_t pfn = 0; pfn < PAGES; pfn++)
        fill_page(src, PAGES, pfn);
    /* pass 1 in batches of 64 pages */
    pagewire_page_in batch[64];
    size_t n = 0, done = 0, encoded = 0;
    for (size_t first = 0; first < PAGES; first += 64) {
        size_t count = PAGES - first < 64 ? PAGES - first : 64;
        for (size_t i = 0; i < count; i++) {
            batch[i].pfn = first + i;
            batch[i].data = src + (first + i) * PAGE;
        }
        for (size_t at = 0; at < count; at += done) {
            done = 0;
            OK(pagewire_encoder_encode_pages(enc, batch + at, count - at, out, 2 * sz.max_output,
                                             &done, &n));
            CHECK(done >= 1);
            if (done == 0)
                break;
            append(&stream, out, n);
        }
        encoded += count;
    }
    OK(pagewire_encoder_end_iteration(enc, out, sz.max_output, &n));
    append(&stream, out, n);
    /* passes 2-4: dirty about a tenth, one page at a time; pass 3 without LZ4 */
    for (int it = 1; it < 4; it++) {
        bool lz4_now = !(it == 2);
        OK(pagewire_encoder_set_lz4(enc, it != 2, &lz4_now));
        CHECK(lz4_now == (it != 2));
        pagewire_encoder_stats before;
        OK(pagewire_encoder_get_stats(enc, &before));
        for (size_t pfn = 0; pfn < PAGES; pfn++) {
            if (next_rand() % 10)
                continue;
            dirty_page(src, PAGES, pfn);
            OK(pagewire_encoder_encode_page(enc, pfn, src + pfn * PAGE, PAGE, out, sz.max_output,
                                            &n));
            append(&stream, out, n);
            encoded++;
        }
        OK(pagewire_encoder_end_iteration(enc, out, sz.max_output, &n));
        append(&stream, out, n);
        pagewire_encoder_stats after;
        OK(pagewire_encoder_get_stats(enc, &after));
        CHECK(after.frames > before.frames);
        if (it == 2)
            CHECK(after.frames_lz4 == before.frames_lz4);
        else
            CHECK(after.frames_lz4 > before.frames_lz4);
    }
    CHECK_RC(pagewire_encoder_set_lz4(NULL, true, NULL), PAGEWIRE_NULL_ARGUMENT);
    uint8_t vcpu[200];
    for (size_t i = 0; i < sizeof vcpu; i++)
        vcpu[i] = (uint8_t)(i * 7);
    OK(pagewire_encoder_append_blob(enc, 0x76637075u, vcpu, sizeof vcpu, out, sz.max_output, &n));
    append(&stream, out, n);
    OK(pagewire_encoder_finish(enc, out, sz.max_output, &n));
    append(&stream, out, n);

    pagewire_encoder_stats es;
    OK(pagewire_encoder_get_stats(enc, &es));
    CHECK(es.pages == encoded);
    CHECK(es.zero.pages + es.dup.pages + es.raw.pages + es.delta.pages + es.blocks.pages ==
          encoded);
    CHECK(es.bytes_out == stream.len);
    CHECK(es.iterations == 4 && es.blobs == 1);
    CHECK(es.delta_uses > 0 && es.zero.pages > 0 && es.cache_hits > 0);
    CHECK(stream.len < (size_t)encoded * PAGE / 2); /* it compresses */
    uint64_t it_no = 0;
    OK(pagewire_encoder_iteration(enc, &it_no));
    CHECK(it_no == 4);
    pagewire_config back;
    OK(pagewire_encoder_get_config(enc, &back));
    CHECK(memcmp(&back, &cfg, sizeof cfg) == 0);
    CHECK_RC(pagewire_encoder_encode_page(enc, 0, src, PAGE, out, sz.max_output, &n),
             PAGEWIRE_FINISHED);
    OK(pagewire_encoder_deinit(enc));

    /* decoder 1: header first, then the stream in odd-sized chunks, callbacks */
    pagewire_config from_stream;
    OK(pagewire_config_from_header(stream.data, stream.len, &from_stream));
    CHECK(from_stream.stream_id == 7);
    pagewire_sizes dsz;
    OK(pagewire_config_sizes(&from_stream, &dsz));
    uint8_t *dec_mem = malloc(dsz.decoder_storage + 5);
    pagewire_decoder *dec = NULL;
    size_t used = 0;
    OK(pagewire_decoder_open(stream.data, stream.len, dec_mem + 5, dsz.decoder_storage, 0, &dec,
                             &used));
    CHECK(used == PAGEWIRE_HEADER_LEN);
    dest d = {0};
    d.ram = calloc(PAGES, PAGE);
    d.pages = PAGES;
    pagewire_destination to_sink = to_callbacks(sink_for(&d));
    size_t pos = used, avail = used, delivered = 0;
    while (pos < stream.len) {
        avail += 1 + next_rand() % 30000;
        if (avail > stream.len)
            avail = stream.len;
        size_t consumed = 0, pages = 0;
        OK(pagewire_decoder_decode(dec, stream.data + pos, avail - pos, &to_sink, &consumed,
                                   &pages));
        pos += consumed;
        delivered += pages;
        if (avail == stream.len && consumed == 0)
            break;
    }
    CHECK(pos == stream.len);
    OK(pagewire_decoder_check_complete(dec));
    CHECK(memcmp(d.ram, src, (size_t)PAGES * PAGE) == 0);
    CHECK(d.pages_seen == encoded && delivered == encoded);
    CHECK(d.iterations_seen == 4 && !d.out_of_order && d.ended);
    CHECK(d.blob_tag == 0x76637075u && d.blob_len == sizeof vcpu &&
          memcmp(d.blob, vcpu, sizeof vcpu) == 0);
    pagewire_decoder_stats ds;
    OK(pagewire_decoder_get_stats(dec, &ds));
    CHECK(ds.pages == encoded && ds.bytes_in == stream.len && ds.iterations == 4 &&
          ds.blobs == 1);
    CHECK(ds.frames == es.frames);
    OK(pagewire_decoder_get_config(dec, &back));
    CHECK(memcmp(&back, &cfg, sizeof cfg) == 0);
    OK(pagewire_decoder_close(dec));

    /* decoder 2: allocated, frame by frame as a network reader would, straight into RAM
     * split into two regions with a hole-free boundary at pfn 1000 */
    pagewire_decoder *dec2 = NULL;
    OK(pagewire_decoder_open(stream.data, stream.len, NULL, 0, 0, &dec2, &used));
    uint8_t *ram2 = calloc(PAGES, PAGE);
    pagewire_ram_region regions[2] = {
        {1000, PAGES - 1000, ram2 + 1000 * (size_t)PAGE},
        {0, 1000, ram2},
    };
    dest events = {0};
    pagewire_sink ev = sink_for(&events);
    ev.page = NULL;
    pagewire_destination into_ram = to_ram(regions, 2, ev);
    pos = used;
    size_t frames = 0, stored = 0;
    while (pos < stream.len) {
        size_t flen = 0, pages = 0, taken = 0;
        OK(pagewire_decoder_frame_len(dec2, stream.data + pos, PAGEWIRE_FRAME_HEADER_LEN, &flen));
        CHECK(flen <= dsz.max_frame && pos + flen <= stream.len);
        if (flen == 0 || pos + flen > stream.len)
            break;
        OK(pagewire_decoder_decode(dec2, stream.data + pos, flen, &into_ram, &taken, &pages));
        CHECK(taken == flen);
        stored += pages;
        pos += flen;
        frames++;
    }
    CHECK(frames == es.frames && stored == encoded);
    OK(pagewire_decoder_check_complete(dec2));
    CHECK(memcmp(ram2, src, (size_t)PAGES * PAGE) == 0);
    CHECK(events.iterations_seen == 4 && events.ended && events.blob_len == sizeof vcpu);
    OK(pagewire_decoder_close(dec2));

    /* decoder 3: through a page table (pages mapped one by one, here in reverse order) */
    pagewire_decoder *dec3 = NULL;
    OK(pagewire_decoder_open(stream.data, stream.len, NULL, 0, 0, &dec3, &used));
    uint8_t *ram3 = calloc(PAGES, PAGE);
    uint8_t **table = malloc(PAGES * sizeof *table);
    for (size_t pfn = 0; pfn < PAGES; pfn++)
        table[pfn] = ram3 + (PAGES - 1 - pfn) * (size_t)PAGE;
    size_t consumed3 = 0, pages3 = 0;
    pagewire_destination through_table = to_table(table, PAGES, no_events);
    OK(pagewire_decoder_decode(dec3, stream.data + used, stream.len - used, &through_table,
                               &consumed3, &pages3));
    CHECK(consumed3 == stream.len - used && pages3 == encoded);
    OK(pagewire_decoder_check_complete(dec3));
    size_t same = 0;
    for (size_t pfn = 0; pfn < PAGES; pfn++)
        same += memcmp(table[pfn], src + pfn * PAGE, PAGE) == 0;
    CHECK(same == PAGES);
    OK(pagewire_decoder_close(dec3));
    free(table);
    free(ram3);

    free(ram2);
    free(d.ram);
    free(dec_mem);
    free(stream.data);
    free(out);
    free(enc_mem);
    free(src);
}

static pagewire_decoder *decoder_for(const bytes *s) {
    pagewire_decoder *dec = NULL;
    size_t used = 0;
    OK(pagewire_decoder_open(s->data, s->len, NULL, 0, 0, &dec, &used));
    return dec;
}

/* Corruption, reordering, truncation and stream mix-ups are named, and final. */
static void test_corruption_is_rejected(void) {
    enum { PAGES = 400 };
    pagewire_config cfg = small_config();
    cfg.lz4 = 0; /* so that a flipped body byte reaches the CRC check as such */
    uint8_t *ram = calloc(PAGES, PAGE);
    bytes s = make_stream(&cfg, ram, PAGES, 2);
    uint8_t *body = s.data + PAGEWIRE_HEADER_LEN;
    size_t body_len = s.len - PAGEWIRE_HEADER_LEN;
    dest d = {0};
    d.ram = calloc(PAGES, PAGE);
    d.pages = PAGES;
    pagewire_destination sink = to_callbacks(sink_for(&d));
    size_t consumed = 12345, pages = 0;

    /* the clean stream decodes */
    pagewire_decoder *dec = decoder_for(&s);
    OK(pagewire_decoder_decode(dec, body, body_len, &sink, &consumed, NULL));
    CHECK(consumed == body_len);
    OK(pagewire_decoder_check_complete(dec));
    CHECK(memcmp(d.ram, ram, (size_t)PAGES * PAGE) == 0);
    /* anything after the end is trailing data */
    size_t f0 = 0;
    OK(pagewire_decoder_frame_len(dec, body, body_len, &f0));
    CHECK_RC(pagewire_decoder_decode(dec, body, f0, &sink, &consumed, &pages),
             PAGEWIRE_TRAILING_DATA);
    OK(pagewire_decoder_close(dec));

    /* one flipped bit in a frame body */
    body[100] ^= 0x10;
    dec = decoder_for(&s);
    consumed = 12345;
    d.pages_seen = 0;
    pages = 777;
    CHECK_RC(pagewire_decoder_decode(dec, body, body_len, &sink, &consumed, &pages),
             PAGEWIRE_CRC_MISMATCH);
    CHECK(consumed == 12345 && pages == 777); /* outputs untouched on failure */
    CHECK(d.pages_seen == 0); /* nothing of the bad frame was delivered */
    CHECK_RC(pagewire_decoder_decode(dec, body, body_len, &sink, &consumed, NULL),
             PAGEWIRE_FINISHED);
    CHECK_RC(pagewire_decoder_check_complete(dec), PAGEWIRE_FINISHED);
    OK(pagewire_decoder_close(dec));
    body[100] ^= 0x10;

    /* frames out of order: the second frame first */
    dec = decoder_for(&s);
    size_t f1 = 0;
    OK(pagewire_decoder_frame_len(dec, body + f0, body_len - f0, &f1));
    CHECK_RC(pagewire_decoder_decode(dec, body + f0, f1, &sink, &consumed, &pages),
             PAGEWIRE_FRAME_OUT_OF_ORDER);
    char msg[256];
    OK(pagewire_last_error_message(msg, sizeof msg, NULL));
    CHECK(strstr(msg, "frame 1 arrived where frame 0 was expected") != NULL);
    OK(pagewire_decoder_close(dec));

    /* truncated: all but the last bytes decode, and the stream is not complete */
    dec = decoder_for(&s);
    OK(pagewire_decoder_decode(dec, body, body_len - 3, &sink, &consumed, NULL));
    CHECK(consumed < body_len - 3);
    CHECK_RC(pagewire_decoder_check_complete(dec), PAGEWIRE_TRUNCATED);
    /* a frame cut short is left for the next call: nothing consumed, nothing delivered */
    size_t more = 12345;
    pages = 12345;
    OK(pagewire_decoder_decode(dec, body + consumed, body_len - consumed - 3, &sink, &more,
                               &pages));
    CHECK(more == 0 && pages == 0);
    CHECK_RC(pagewire_decoder_check_complete(dec), PAGEWIRE_TRUNCATED);
    /* and decodes once it is whole */
    OK(pagewire_decoder_decode(dec, body + consumed, body_len - consumed, &sink, &more, NULL));
    CHECK(more == body_len - consumed);
    OK(pagewire_decoder_check_complete(dec));
    OK(pagewire_decoder_close(dec));

    /* a frame of another stream */
    pagewire_config other = cfg;
    other.stream_id = 8;
    pagewire_decoder *dec2 = NULL;
    OK(open_for(&other, NULL, 0, &dec2));
    CHECK_RC(pagewire_decoder_decode(dec2, body, f0, &sink, &consumed, &pages),
             PAGEWIRE_WRONG_STREAM);
    OK(pagewire_decoder_close(dec2));

    /* broken stream headers */
    uint8_t header[PAGEWIRE_HEADER_LEN];
    pagewire_config got;
    memcpy(header, s.data, sizeof header);
    header[0] = 'X';
    CHECK_RC(pagewire_config_from_header(header, sizeof header, &got), PAGEWIRE_BAD_MAGIC);
    memcpy(header, s.data, sizeof header);
    header[4] = PAGEWIRE_FORMAT_VERSION + 1;
    CHECK_RC(pagewire_decoder_open(header, sizeof header, NULL, 0, 0, &dec2, &consumed),
             PAGEWIRE_UNSUPPORTED_VERSION);
    memcpy(header, s.data, sizeof header);
    header[13] ^= 1;
    CHECK_RC(pagewire_decoder_open(header, sizeof header, NULL, 0, 0, &dec2, &consumed),
             PAGEWIRE_CRC_MISMATCH);
    /* a frame header with an absurd length is refused before anything is read */
    dec = decoder_for(&s);
    uint8_t fh[PAGEWIRE_FRAME_HEADER_LEN];
    memcpy(fh, body, sizeof fh);
    fh[15] = 0x7f; /* wire_len */
    CHECK_RC(pagewire_decoder_frame_len(dec, fh, sizeof fh, &f1), PAGEWIRE_LENGTH_OUT_OF_RANGE);
    OK(pagewire_decoder_close(dec));

    /* a callback that refuses: delivery stops and the decoder is done */
    dec = decoder_for(&s);
    d.pages_seen = 0;
    d.fail_after = 10;
    CHECK_RC(pagewire_decoder_decode(dec, body, body_len, &sink, &consumed, NULL),
             PAGEWIRE_CALLBACK_FAILED);
    CHECK(d.pages_seen == 9);
    d.fail_after = 0;
    CHECK_RC(pagewire_decoder_decode(dec, body, body_len, &sink, &consumed, NULL),
             PAGEWIRE_FINISHED);
    OK(pagewire_decoder_close(dec));

    /* a page outside every RAM region */
    dec = decoder_for(&s);
    pagewire_ram_region half = {0, PAGES / 2, d.ram};
    pagewire_destination into_half = to_ram(&half, 1, no_events);
    CHECK_RC(pagewire_decoder_decode(dec, body, body_len, &into_half, &consumed, NULL),
             PAGEWIRE_PFN_OUT_OF_RANGE);
    CHECK_RC(pagewire_decoder_check_complete(dec), PAGEWIRE_FINISHED);
    OK(pagewire_decoder_close(dec));

    /* a page table with a hole, and one too short */
    uint8_t **table = malloc(PAGES * sizeof *table);
    for (size_t pfn = 0; pfn < PAGES; pfn++)
        table[pfn] = d.ram + pfn * PAGE;
    table[PAGES / 3] = NULL;
    dec = decoder_for(&s);
    pagewire_destination holed = to_table(table, PAGES, no_events);
    CHECK_RC(pagewire_decoder_decode(dec, body, body_len, &holed, &consumed, NULL),
             PAGEWIRE_PFN_OUT_OF_RANGE);
    OK(pagewire_decoder_close(dec));
    table[PAGES / 3] = d.ram;
    dec = decoder_for(&s);
    pagewire_destination too_short = to_table(table, PAGES - 1, no_events);
    CHECK_RC(pagewire_decoder_decode(dec, body, body_len, &too_short, &consumed, NULL),
             PAGEWIRE_PFN_OUT_OF_RANGE);
    pagewire_destination empty_table = to_table(NULL, 0, no_events);
    CHECK_RC(pagewire_decoder_decode(dec, body, body_len, &empty_table, &consumed, NULL),
             PAGEWIRE_FINISHED);
    OK(pagewire_decoder_close(dec));
    free(table);

    free(d.ram);
    free(s.data);
    free(ram);
}

static void test_null_and_undersized_arguments(void) {
    pagewire_config cfg = small_config();
    pagewire_sizes sz;
    OK(pagewire_config_sizes(&cfg, &sz));
    uint8_t *mem = malloc(sz.encoder_storage);
    uint8_t *out = malloc(sz.max_output);
    uint8_t page[PAGE] = {1};
    size_t n = 777;
    pagewire_encoder *enc = (pagewire_encoder *)(uintptr_t)0x1234; /* sentinel */

    CHECK_RC(pagewire_config_default(NULL), PAGEWIRE_NULL_ARGUMENT);
    CHECK_RC(pagewire_config_validate(NULL), PAGEWIRE_NULL_ARGUMENT);
    CHECK_RC(pagewire_config_sizes(&cfg, NULL), PAGEWIRE_NULL_ARGUMENT);
    CHECK_RC(pagewire_config_sizes(NULL, &sz), PAGEWIRE_NULL_ARGUMENT);
    CHECK_RC(pagewire_config_from_header(NULL, 32, &cfg), PAGEWIRE_NULL_ARGUMENT);
    CHECK_RC(pagewire_encoder_init(NULL, mem, sz.encoder_storage, &enc), PAGEWIRE_NULL_ARGUMENT);
    CHECK_RC(pagewire_encoder_init(&cfg, NULL, sz.encoder_storage, &enc), PAGEWIRE_NULL_ARGUMENT);
    CHECK_RC(pagewire_encoder_init(&cfg, mem, sz.encoder_storage, NULL), PAGEWIRE_NULL_ARGUMENT);
    char msg[128];
    OK(pagewire_last_error_message(msg, sizeof msg, NULL));
    CHECK(strcmp(msg, "argument `out` is NULL") == 0);
    CHECK_RC(pagewire_encoder_new(&cfg, NULL), PAGEWIRE_NULL_ARGUMENT);
    uint8_t header[PAGEWIRE_HEADER_LEN];
    size_t used = 0;
    OK(pagewire_config_header(&cfg, header, sizeof header));
    pagewire_decoder *dec = NULL;
    uint8_t *dmem = malloc(sz.decoder_storage);
    CHECK_RC(pagewire_decoder_open(header, sizeof header, dmem, sz.decoder_storage, 0, NULL, &used),
             PAGEWIRE_NULL_ARGUMENT);
    CHECK_RC(pagewire_decoder_open(header, sizeof header, dmem, sz.decoder_storage, 0, &dec, NULL),
             PAGEWIRE_NULL_ARGUMENT);
    CHECK_RC(pagewire_decoder_open(NULL, sizeof header, dmem, sz.decoder_storage, 0, &dec, &used),
             PAGEWIRE_NULL_ARGUMENT);
    /* storage NULL with a length is a mistake, not a request to allocate */
    CHECK_RC(pagewire_decoder_open(header, sizeof header, NULL, sz.decoder_storage, 0, &dec, &used),
             PAGEWIRE_NULL_ARGUMENT);
    /* flags other than PAGEWIRE_DECODE_IN_PLACE */
    CHECK_RC(pagewire_decoder_open(header, sizeof header, dmem, sz.decoder_storage, 2, &dec, &used),
             PAGEWIRE_INVALID_ARGUMENT);
    CHECK_RC(pagewire_decoder_open(header, sizeof header, dmem, sz.decoder_storage,
                                   PAGEWIRE_DECODE_IN_PLACE | 0x80000000u, &dec, &used),
             PAGEWIRE_INVALID_ARGUMENT);
    CHECK(dec == NULL && used == 0);

    /* undersized storage: refused, handle untouched */
    CHECK_RC(pagewire_encoder_init(&cfg, mem, sz.encoder_storage - 1, &enc),
             PAGEWIRE_INSUFFICIENT_STORAGE);
    CHECK(enc == (pagewire_encoder *)(uintptr_t)0x1234);
    OK(pagewire_last_error_message(msg, sizeof msg, NULL));
    CHECK(strstr(msg, "storage too small") != NULL);
    CHECK_RC(open_for(&cfg, dmem, sz.decoder_storage - 1, &dec), PAGEWIRE_INSUFFICIENT_STORAGE);
    CHECK_RC(open_for(&cfg, dmem, 3, &dec), PAGEWIRE_INSUFFICIENT_STORAGE);
    CHECK(dec == NULL);
    OK(pagewire_decoder_open(header, sizeof header, dmem, sz.decoder_storage, 0, &dec, &used));
    CHECK(used == PAGEWIRE_HEADER_LEN);

    OK(pagewire_encoder_init(&cfg, mem, sz.encoder_storage, &enc));
    CHECK_RC(pagewire_encoder_encode_page(NULL, 0, page, PAGE, out, sz.max_output, &n),
             PAGEWIRE_NULL_ARGUMENT);
    CHECK_RC(pagewire_encoder_encode_page(enc, 0, NULL, PAGE, out, sz.max_output, &n),
             PAGEWIRE_NULL_ARGUMENT);
    CHECK_RC(pagewire_encoder_encode_page(enc, 0, page, PAGE, NULL, sz.max_output, &n),
             PAGEWIRE_NULL_ARGUMENT);
    CHECK_RC(pagewire_encoder_encode_page(enc, 0, page, PAGE, out, sz.max_output, NULL),
             PAGEWIRE_NULL_ARGUMENT);
    /* undersized output: refused, nothing written */
    CHECK_RC(pagewire_encoder_encode_page(enc, 0, page, PAGE, out, sz.max_output - 1, &n),
             PAGEWIRE_OUTPUT_TOO_SMALL);
    CHECK(n == 777);
    CHECK_RC(pagewire_encoder_encode_page(enc, 0, page, 100, out, sz.max_output, &n),
             PAGEWIRE_WRONG_PAGE_LENGTH);
    CHECK_RC(pagewire_encoder_end_iteration(enc, out, 10, &n), PAGEWIRE_OUTPUT_TOO_SMALL);
    CHECK_RC(pagewire_encoder_finish(enc, out, 10, &n), PAGEWIRE_OUTPUT_TOO_SMALL);
    uint8_t *big = calloc(1, sz.max_blob + 1);
    CHECK_RC(pagewire_encoder_append_blob(enc, 1, big, sz.max_blob + 1, out, sz.max_output, &n),
             PAGEWIRE_BLOB_TOO_LARGE);
    CHECK_RC(pagewire_encoder_append_blob(enc, 1, NULL, 5, out, sz.max_output, &n),
             PAGEWIRE_NULL_ARGUMENT);
    CHECK(n == 777);
    /* a batch with one NULL page encodes nothing */
    pagewire_page_in batch[4] = {{0, page}, {1, page}, {2, NULL}, {3, page}};
    size_t done = 555;
    CHECK_RC(pagewire_encoder_encode_pages(enc, batch, 4, out, sz.max_output, &done, &n),
             PAGEWIRE_NULL_ARGUMENT);
    CHECK_RC(pagewire_encoder_encode_pages(enc, NULL, 4, out, sz.max_output, &done, &n),
             PAGEWIRE_NULL_ARGUMENT);
    CHECK_RC(pagewire_encoder_encode_pages(enc, batch, 2, out, sz.max_output - 1, &done, &n),
             PAGEWIRE_OUTPUT_TOO_SMALL);
    CHECK(done == 555 && n == 777);
    pagewire_encoder_stats es;
    OK(pagewire_encoder_get_stats(enc, &es));
    CHECK(es.pages == 0 && es.bytes_out == 0);
    /* with room for one call's worst case only, a call that wrote bytes takes one page */
    OK(pagewire_encoder_encode_pages(enc, batch, 2, out, sz.max_output, &done, &n));
    CHECK(done == 1 && n == PAGEWIRE_HEADER_LEN);
    OK(pagewire_encoder_encode_pages(enc, batch + 1, 1, out, sz.max_output, &done, &n));
    CHECK(done == 1 && n == 0);
    CHECK_RC(pagewire_encoder_get_stats(enc, NULL), PAGEWIRE_NULL_ARGUMENT);
    CHECK_RC(pagewire_encoder_get_stats(NULL, &es), PAGEWIRE_NULL_ARGUMENT);

    /* decoder arguments */
    size_t flen = 0;
    CHECK_RC(pagewire_decoder_frame_len(dec, out, 5, &flen), PAGEWIRE_TRUNCATED);
    CHECK_RC(pagewire_decoder_frame_len(dec, NULL, 20, &flen), PAGEWIRE_NULL_ARGUMENT);
    CHECK_RC(pagewire_decoder_decode(dec, out, 0, NULL, &flen, NULL), PAGEWIRE_NULL_ARGUMENT);
    pagewire_destination empty = {0}; /* callbacks, all NULL */
    CHECK_RC(pagewire_decoder_decode(dec, out, 0, &empty, NULL, NULL), PAGEWIRE_NULL_ARGUMENT);
    CHECK_RC(pagewire_decoder_decode(NULL, out, 0, &empty, &flen, NULL), PAGEWIRE_NULL_ARGUMENT);
    OK(pagewire_decoder_decode(dec, NULL, 0, &empty, &flen, NULL));
    CHECK(flen == 0);
    pagewire_ram_region bad = {0, 4, NULL};
    pagewire_destination bad_dest = to_ram(&bad, 1, no_events);
    CHECK_RC(pagewire_decoder_decode(dec, out, 0, &bad_dest, &flen, NULL), PAGEWIRE_NULL_ARGUMENT);
    bad_dest = to_ram(NULL, 1, no_events);
    CHECK_RC(pagewire_decoder_decode(dec, out, 0, &bad_dest, &flen, NULL), PAGEWIRE_NULL_ARGUMENT);
    /* an unknown kind, the reserved field, or the fields of another kind set */
    bad_dest = to_callbacks(no_events);
    bad_dest.kind = 7;
    CHECK_RC(pagewire_decoder_decode(dec, out, 0, &bad_dest, &flen, NULL),
             PAGEWIRE_INVALID_ARGUMENT);
    bad_dest = to_callbacks(no_events);
    bad_dest.reserved = 1;
    CHECK_RC(pagewire_decoder_decode(dec, out, 0, &bad_dest, &flen, NULL),
             PAGEWIRE_INVALID_ARGUMENT);
    bad_dest = to_ram(NULL, 0, no_events);
    bad_dest.page_table_len = 1;
    CHECK_RC(pagewire_decoder_decode(dec, out, 0, &bad_dest, &flen, NULL),
             PAGEWIRE_INVALID_ARGUMENT);
    CHECK(flen == 0);
    CHECK_RC(pagewire_decoder_check_complete(NULL), PAGEWIRE_NULL_ARGUMENT);
    CHECK_RC(pagewire_decoder_check_complete(dec), PAGEWIRE_TRUNCATED);

    /* the message buffer: truncated like snprintf, full length reported */
    CHECK_RC(pagewire_encoder_init(&cfg, NULL, 1, &enc), PAGEWIRE_NULL_ARGUMENT);
    char tiny[8];
    size_t full = 0;
    OK(pagewire_last_error_message(tiny, sizeof tiny, &full));
    CHECK(full == strlen("argument `storage` is NULL"));
    CHECK(strcmp(tiny, "argumen") == 0);
    OK(pagewire_last_error_message(NULL, 0, &full));
    CHECK_RC(pagewire_last_error_message(NULL, 4, &full), PAGEWIRE_NULL_ARGUMENT);

    OK(pagewire_encoder_deinit(enc));
    OK(pagewire_decoder_close(dec));
    free(big);
    free(dmem);
    free(out);
    free(mem);
}

static void test_handles_are_checked(void) {
    pagewire_config cfg = small_config();
    pagewire_sizes sz;
    OK(pagewire_config_sizes(&cfg, &sz));
    uint8_t *mem = malloc(sz.encoder_storage);
    uint8_t *out = malloc(sz.max_output);
    uint8_t page[PAGE] = {0};
    size_t n = 0;
    pagewire_encoder *enc = NULL, *enc2 = NULL;
    pagewire_decoder *dec = NULL;
    OK(pagewire_encoder_init(&cfg, mem, sz.encoder_storage, &enc));
    OK(pagewire_encoder_new(&cfg, &enc2));
    OK(open_for(&cfg, NULL, 0, &dec));

    /* another kind of object, or a misaligned pointer */
    CHECK_RC(pagewire_encoder_encode_page((pagewire_encoder *)(void *)dec, 0, page, PAGE, out,
                                          sz.max_output, &n),
             PAGEWIRE_INVALID_HANDLE);
    CHECK_RC(pagewire_decoder_check_complete((pagewire_decoder *)(void *)enc),
             PAGEWIRE_INVALID_HANDLE);
    CHECK_RC(pagewire_encoder_encode_page((pagewire_encoder *)((char *)enc + 1), 0, page, PAGE,
                                          out, sz.max_output, &n),
             PAGEWIRE_INVALID_HANDLE);
    /* the wrong release function */
    CHECK_RC(pagewire_encoder_free(enc), PAGEWIRE_INVALID_HANDLE);
    CHECK_RC(pagewire_encoder_deinit(enc2), PAGEWIRE_INVALID_HANDLE);
    char msg[200];
    OK(pagewire_last_error_message(msg, sizeof msg, NULL));
    CHECK(strstr(msg, "pagewire_encoder_free") != NULL);
    OK(pagewire_encoder_free(NULL));
    OK(pagewire_decoder_close(NULL));
    /* use after release */
    OK(pagewire_encoder_deinit(enc));
    CHECK_RC(pagewire_encoder_encode_page(enc, 0, page, PAGE, out, sz.max_output, &n),
             PAGEWIRE_INVALID_HANDLE);
    CHECK_RC(pagewire_encoder_deinit(enc), PAGEWIRE_INVALID_HANDLE);
    /* never initialised */
    memset(mem, 0, sz.encoder_storage);
    CHECK_RC(pagewire_encoder_finish((pagewire_encoder *)(void *)mem, out, sz.max_output, &n),
             PAGEWIRE_INVALID_HANDLE);
    OK(pagewire_encoder_free(enc2));
    OK(pagewire_decoder_close(dec));
    /* one release for decoders of both kinds; after it the handle is dead */
    uint8_t *dmem = malloc(sz.decoder_storage);
    OK(open_for(&cfg, dmem, sz.decoder_storage, &dec));
    OK(pagewire_decoder_close(dec));
    CHECK_RC(pagewire_decoder_check_complete(dec), PAGEWIRE_INVALID_HANDLE);
    CHECK_RC(pagewire_decoder_close(dec), PAGEWIRE_INVALID_HANDLE);
    free(dmem);
    free(out);
    free(mem);
}

/* Releasing twice, or calling an object after its release, is refused with
 * PAGEWIRE_INVALID_HANDLE without reading the freed memory: objects from `_new` have table
 * handles (docs/C-API.md). The default 64 MiB cache makes each allocation larger than
 * glibc's largest mmap threshold, so a freed one is unmapped at once and any read of it
 * would crash (and the next allocation often gets the same address). */
static void test_released_handles_are_refused(void) {
    pagewire_config cfg;
    OK(pagewire_config_default(&cfg));
    pagewire_sizes sz;
    OK(pagewire_config_sizes(&cfg, &sz));
    uint8_t *out = malloc(sz.max_output);
    uint8_t page[PAGE] = {0};
    size_t n = 0;
    pagewire_encoder *enc = NULL, *again = NULL;
    OK(pagewire_encoder_new(&cfg, &enc));
    OK(pagewire_encoder_free(enc));
    CHECK_RC(pagewire_encoder_free(enc), PAGEWIRE_INVALID_HANDLE);
    CHECK_RC(pagewire_encoder_encode_page(enc, 0, page, PAGE, out, sz.max_output, &n),
             PAGEWIRE_INVALID_HANDLE);
    char msg[200];
    OK(pagewire_last_error_message(msg, sizeof msg, NULL));
    CHECK(strstr(msg, "already released") != NULL);
    /* a new encoder of the same size may get the same block: the old handle stays dead */
    OK(pagewire_encoder_new(&cfg, &again));
    CHECK(again != enc);
    CHECK_RC(pagewire_encoder_finish(enc, out, sz.max_output, &n), PAGEWIRE_INVALID_HANDLE);
    OK(pagewire_encoder_encode_page(again, 0, page, PAGE, out, sz.max_output, &n));
    OK(pagewire_encoder_free(again));
    CHECK_RC(pagewire_encoder_free(again), PAGEWIRE_INVALID_HANDLE);

    /* a closed decoder the library allocated is not taken for a live one */
    pagewire_decoder *dec = NULL;
    OK(open_for(&cfg, NULL, 0, &dec));
    OK(pagewire_decoder_close(dec));
    size_t flen = 0;
    uint8_t frame[PAGEWIRE_FRAME_HEADER_LEN] = {0};
    CHECK_RC(pagewire_decoder_frame_len(dec, frame, sizeof frame, &flen),
             PAGEWIRE_INVALID_HANDLE);
    CHECK_RC(pagewire_decoder_check_complete(dec), PAGEWIRE_INVALID_HANDLE);
    CHECK_RC(pagewire_decoder_close(dec), PAGEWIRE_INVALID_HANDLE);
    free(out);

    /* more live objects than the table holds still work; the table's entries are reused */
    enum { MANY = 4200 };
    pagewire_config tiny = small_config();
    tiny.cache_pages = 1;
    pagewire_decoder **decs = calloc(MANY, sizeof *decs);
    int opened = 0;
    for (int i = 0; i < MANY; i++)
        opened += open_for(&tiny, NULL, 0, &decs[i]) == PAGEWIRE_OK;
    CHECK(opened == MANY);
    for (int i = 0; i < MANY; i++)
        CHECK_RC(pagewire_decoder_check_complete(decs[i]), PAGEWIRE_TRUNCATED);
    for (int i = 0; i < MANY; i++)
        OK(pagewire_decoder_close(decs[i]));
    /* the first ones had table handles: closing them again is refused */
    CHECK_RC(pagewire_decoder_close(decs[0]), PAGEWIRE_INVALID_HANDLE);
    CHECK_RC(pagewire_decoder_close(decs[100]), PAGEWIRE_INVALID_HANDLE);
    free(decs);
}

typedef struct {
    uint8_t *ram;
    size_t pages;
    atomic_int stop;
} writer_arg;

/* A vCPU: keeps writing into guest pages (plain, racy stores, as guests do). */
static void *vcpu_writer(void *arg) {
    writer_arg *w = arg;
    uint64_t x = 0x1234567u;
    while (!atomic_load_explicit(&w->stop, memory_order_relaxed)) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        volatile uint8_t *p = w->ram + (x % 8) * PAGE; /* a hot set of 8 pages */
        p[(x >> 24) % PAGE] = (uint8_t)(x >> 8);
        p[(x >> 36) % PAGE] = 0;
    }
    return NULL;
}

/* Decodes the whole stream `s` into fresh memory of `pages` pages, which must then equal
 * `ram`, the source after its stop-and-copy pass. */
static void check_rebuilds(const bytes *s, const uint8_t *ram, size_t pages) {
    uint8_t *got = calloc(pages, PAGE);
    pagewire_ram_region r = {0, pages, got};
    pagewire_decoder *dec = decoder_for(s);
    size_t consumed = 0;
    pagewire_destination into_ram = to_ram(&r, 1, no_events);
    OK(pagewire_decoder_decode(dec, s->data + PAGEWIRE_HEADER_LEN, s->len - PAGEWIRE_HEADER_LEN,
                               &into_ram, &consumed, NULL));
    OK(pagewire_decoder_check_complete(dec));
    CHECK(memcmp(got, ram, pages * PAGE) == 0);
    OK(pagewire_decoder_close(dec));
    free(got);
}

/* Live migration encodes pages that vCPUs are writing. Whatever the encoder reads, both
 * ends' caches must stay in step, so that the last, quiescent pass restores RAM exactly. */
static void test_pages_written_while_encoding(void) {
    enum { PAGES = 16, PASSES = 3000 };
    pagewire_config cfg = small_config();
    cfg.cache_pages = 64;
    pagewire_sizes sz;
    OK(pagewire_config_sizes(&cfg, &sz));
    uint8_t *ram = calloc(PAGES, PAGE);
    for (size_t pfn = 0; pfn < PAGES; pfn++) /* 8 hot pages (the writer's), 8 quiet */
        memset(ram + pfn * PAGE, (int)(pfn % 8), PAGE / 2);
    pagewire_encoder *enc = NULL;
    OK(pagewire_encoder_new(&cfg, &enc));
    uint8_t *out = malloc(4 * sz.max_output);
    bytes s = {0};
    size_t n = 0, done = 0;
    pagewire_page_in batch[PAGES];
    for (size_t pfn = 0; pfn < PAGES; pfn++) {
        batch[pfn].pfn = pfn;
        batch[pfn].data = ram + pfn * PAGE;
    }
    writer_arg w = {ram, PAGES, 0};
    pthread_t th;
    CHECK(pthread_create(&th, NULL, vcpu_writer, &w) == 0);
    for (int pass = 0; pass <= PASSES; pass++) {
        if (pass == PASSES) { /* stop and copy: the vCPU is paused */
            atomic_store(&w.stop, 1);
            pthread_join(th, NULL);
        }
        for (size_t at = 0; at < PAGES; at += done) {
            OK(pagewire_encoder_encode_pages(enc, batch + at, PAGES - at, out, 4 * sz.max_output,
                                             &done, &n));
            append(&s, out, n);
            if (done == 0)
                break;
        }
        OK(pagewire_encoder_end_iteration(enc, out, sz.max_output, &n));
        append(&s, out, n);
    }
    OK(pagewire_encoder_finish(enc, out, sz.max_output, &n));
    append(&s, out, n);
    OK(pagewire_encoder_free(enc));

    check_rebuilds(&s, ram, PAGES);
    free(s.data);
    free(out);
    free(ram);
}

/* Plain pages in bulk (the fast-link path) while a vCPU writes, mixed with page-by-page
 * passes; after the stop-and-copy pass the destination equals the source. Zero pages go
 * as ZERO records, the rest as PLAIN, none of them into the cache. */
static void test_plain_pages_in_bulk(void) {
    enum { PAGES = 64, PASSES = 400 };
    pagewire_config cfg = small_config();
    pagewire_sizes sz;
    OK(pagewire_config_sizes(&cfg, &sz));
    uint8_t *ram = calloc(PAGES, PAGE);
    for (size_t pfn = 0; pfn < PAGES; pfn++)
        fill_page(ram, PAGES, pfn);
    pagewire_encoder *enc = NULL;
    OK(pagewire_encoder_new(&cfg, &enc));
    uint8_t *out = malloc(3 * sz.max_output);
    bytes s = {0};
    size_t n = 0, done = 0;
    pagewire_page_in batch[PAGES];
    for (size_t pfn = 0; pfn < PAGES; pfn++) {
        batch[pfn].pfn = pfn;
        batch[pfn].data = ram + pfn * PAGE;
    }
    /* refused before anything is encoded: a NULL page, an output below max_output */
    batch[3].data = NULL;
    CHECK_RC(pagewire_encoder_encode_plain_pages(enc, batch, PAGES, out, sz.max_output, &done,
                                                 &n),
             PAGEWIRE_NULL_ARGUMENT);
    batch[3].data = ram + 3 * PAGE;
    CHECK_RC(pagewire_encoder_encode_plain_pages(enc, batch, PAGES, out, sz.max_output - 1,
                                                 &done, &n),
             PAGEWIRE_OUTPUT_TOO_SMALL);
    pagewire_encoder_stats st;
    OK(pagewire_encoder_get_stats(enc, &st));
    CHECK(st.bytes_out == 0);
    /* pass 1 in bulk, before any vCPU runs: every page once */
    for (size_t at = 0; at < PAGES; at += done) {
        OK(pagewire_encoder_encode_plain_pages(enc, batch + at, PAGES - at, out,
                                               3 * sz.max_output, &done, &n));
        append(&s, out, n);
    }
    OK(pagewire_encoder_end_iteration(enc, out, sz.max_output, &n));
    append(&s, out, n);
    OK(pagewire_encoder_get_stats(enc, &st));
    CHECK(st.zero.pages + st.raw.pages == PAGES);
    CHECK(st.zero.pages > 0 && st.raw.pages > 0);
    CHECK(st.dup.pages == 0 && st.delta.pages == 0);
    writer_arg w = {ram, PAGES, 0};
    pthread_t th;
    CHECK(pthread_create(&th, NULL, vcpu_writer, &w) == 0);
    for (int pass = 0; pass <= PASSES; pass++) {
        if (pass == PASSES) { /* stop and copy: the vCPU is paused */
            atomic_store(&w.stop, 1);
            pthread_join(th, NULL);
        }
        for (size_t at = 0; at < PAGES; at += done) {
            /* plain pages in bulk, every third pass page by page through the cache */
            if (pass % 3 == 2)
                OK(pagewire_encoder_encode_pages(enc, batch + at, PAGES - at, out,
                                                 3 * sz.max_output, &done, &n));
            else
                OK(pagewire_encoder_encode_plain_pages(enc, batch + at, PAGES - at, out,
                                                       3 * sz.max_output, &done, &n));
            append(&s, out, n);
        }
        OK(pagewire_encoder_end_iteration(enc, out, sz.max_output, &n));
        append(&s, out, n);
    }
    OK(pagewire_encoder_finish(enc, out, sz.max_output, &n));
    append(&s, out, n);
    OK(pagewire_encoder_free(enc));

    check_rebuilds(&s, ram, PAGES);
    free(s.data);
    free(out);
    free(ram);
}

/* State in static memory, sized at compile time. */
#define S_PAGES 64
#define S_FRAME 16384
static uint8_t static_enc[PAGEWIRE_ENCODER_STORAGE_BOUND(PAGE, 4, S_PAGES, S_FRAME)];
static uint8_t static_dec[PAGEWIRE_DECODER_STORAGE_BOUND(PAGE, S_PAGES, S_FRAME)];
static uint8_t static_out[PAGEWIRE_MAX_OUTPUT_BOUND(S_FRAME)];

static void test_static_storage(void) {
    pagewire_config cfg;
    OK(pagewire_config_default(&cfg));
    cfg.cache_pages = S_PAGES;
    cfg.frame_bytes = S_FRAME;
    pagewire_encoder *enc = NULL;
    pagewire_decoder *dec = NULL;
    OK(pagewire_encoder_init(&cfg, static_enc, sizeof static_enc, &enc));
    OK(open_for(&cfg, static_dec, sizeof static_dec, &dec));
    static uint8_t ram[8 * PAGE], got[8 * PAGE];
    bytes s = {0};
    size_t n = 0;
    for (size_t pfn = 0; pfn < 8; pfn++) {
        fill_page(ram, 8, pfn);
        OK(pagewire_encoder_encode_page(enc, pfn, ram + pfn * PAGE, PAGE, static_out,
                                        sizeof static_out, &n));
        append(&s, static_out, n);
    }
    OK(pagewire_encoder_finish(enc, static_out, sizeof static_out, &n));
    append(&s, static_out, n);
    pagewire_ram_region r = {0, 8, got};
    size_t consumed = 0;
    pagewire_destination into_ram = to_ram(&r, 1, no_events);
    OK(pagewire_decoder_decode(dec, s.data + PAGEWIRE_HEADER_LEN, s.len - PAGEWIRE_HEADER_LEN,
                               &into_ram, &consumed, NULL));
    CHECK(consumed == s.len - PAGEWIRE_HEADER_LEN);
    OK(pagewire_decoder_check_complete(dec));
    CHECK(memcmp(ram, got, sizeof ram) == 0);
    OK(pagewire_encoder_deinit(enc));
    OK(pagewire_decoder_close(dec));
    free(s.data);
}

static pagewire_iteration_report rep(uint32_t it, uint64_t sent, uint64_t dirtied,
                                     uint64_t remaining) {
    pagewire_iteration_report r;
    memset(&r, 0, sizeof r);
    r.iteration = it;
    r.pages_sent = sent;
    r.pages_dirtied = dirtied;
    r.pages_remaining = remaining;
    return r;
}

static pagewire_decision decide(pagewire_policy *p, pagewire_iteration_report r) {
    pagewire_decision d = 77;
    OK(pagewire_policy_decide(p, &r, &d));
    return d;
}

/* The same report sequences as the Rust unit tests of codec/src/policy, same answers. */
static void test_policies_answer_as_in_rust(void) {
    const pagewire_decision GO = PAGEWIRE_DECISION_CONTINUE, STOP = PAGEWIRE_DECISION_STOP_AND_COPY;
    pagewire_policy p;
    uint32_t it;

    OK(pagewire_policy_xen_classic(&p, 1000));
    CHECK(strcmp(pagewire_policy_name(&p), "xen-classic") == 0);
    CHECK(strcmp(pagewire_policy_name(&p), PAGEWIRE_POLICY_NAME_XEN_CLASSIC) == 0);
    CHECK(decide(&p, rep(1, 1000, 400, 400)) == GO);
    CHECK(decide(&p, rep(2, 400, 49, 49)) == STOP);
    OK(pagewire_policy_xen_classic(&p, 1000)); /* 3x memory sent */
    for (it = 1; decide(&p, rep(it, 1000, 1000, 1000)) == GO; it++) {
    }
    CHECK(it == 3);
    OK(pagewire_policy_xen_classic(&p, 1000000)); /* 30 iterations */
    for (it = 1; decide(&p, rep(it, 100, 100, 100)) == GO; it++) {
    }
    CHECK(it == 30);

    OK(pagewire_policy_xen_today(&p));
    CHECK(strcmp(pagewire_policy_name(&p), "xen-today") == 0);
    CHECK(strcmp(pagewire_policy_name(&p), PAGEWIRE_POLICY_NAME_XEN_TODAY) == 0);
    for (it = 1; decide(&p, rep(it, 5000, 5000, 5000)) == GO; it++) {
    }
    CHECK(it == 5);
    OK(pagewire_policy_xen_today(&p));
    CHECK(decide(&p, rep(2, 500, 10, 10)) == STOP);
    OK(pagewire_policy_xen_today(&p));
    OK(pagewire_policy_set_max_iterations(&p, 2));
    CHECK(decide(&p, rep(1, 5000, 5000, 5000)) == GO);
    CHECK(decide(&p, rep(2, 5000, 5000, 5000)) == STOP);

    OK(pagewire_policy_downtime_limit(&p, 300000, 4096));
    CHECK(strcmp(pagewire_policy_name(&p), "downtime-limit") == 0);
    CHECK(strcmp(pagewire_policy_name(&p), PAGEWIRE_POLICY_NAME_DOWNTIME_LIMIT) == 0);
    pagewire_iteration_report r = rep(2, 1000, 0, 5000); /* 400 ms at 12.5 MB/s */
    r.bytes_sent = 1000000;
    r.bandwidth_bytes_per_s = 12500000;
    CHECK(decide(&p, r) == GO);
    r.pages_remaining = 3000; /* 240 ms */
    CHECK(decide(&p, r) == STOP);
    OK(pagewire_policy_downtime_limit(&p, 300000, 4096));
    for (it = 1;; it++) {
        r = rep(it, 100000, 0, 100000);
        r.bytes_sent = 400000000;
        r.bandwidth_bytes_per_s = 1000000;
        if (decide(&p, r) == STOP)
            break;
    }
    CHECK(it == 30);

    static const uint64_t smart[6][3] = {{1000, 150, 150}, {150, 150, 150}, {150, 210, 210},
                                         {210, 180, 180},  {180, 140, 140}, {140, 200, 200}};
    OK(pagewire_policy_smart_stop(&p, 3));
    CHECK(strcmp(pagewire_policy_name(&p), "smart-stop") == 0);
    CHECK(strcmp(pagewire_policy_name(&p), PAGEWIRE_POLICY_NAME_SMART_STOP) == 0);
    for (it = 1; it <= 6; it++)
        if (decide(&p, rep(it, smart[it - 1][0], smart[it - 1][1], smart[it - 1][2])) == STOP)
            break;
    CHECK(it == 5);
    OK(pagewire_policy_smart_stop(&p, 3)); /* converging: never stops early */
    static const uint64_t conv[4][3] = {{1000, 300, 300}, {300, 100, 100}, {100, 40, 40},
                                        {40, 20, 20}};
    for (it = 1; it <= 4; it++)
        CHECK(decide(&p, rep(it, conv[it - 1][0], conv[it - 1][1], conv[it - 1][2])) == GO);
    OK(pagewire_policy_smart_stop(&p, 5)); /* non-converging: the ceiling */
    for (it = 1; decide(&p, rep(it, 1000, 999, 999)) == GO; it++) {
    }
    CHECK(it == 30);

    /* a copy continues from the same history */
    OK(pagewire_policy_smart_stop(&p, 3));
    for (it = 1; it <= 4; it++)
        CHECK(decide(&p, rep(it, smart[it - 1][0], smart[it - 1][1], smart[it - 1][2])) == GO);
    pagewire_policy copy = p;
    CHECK(decide(&copy, rep(5, 180, 140, 140)) == STOP);
    CHECK(decide(&p, rep(5, 180, 140, 140)) == STOP);

    /* bad policies and reports */
    pagewire_policy zero;
    memset(&zero, 0, sizeof zero);
    pagewire_decision d = GO;
    CHECK_RC(pagewire_policy_decide(&zero, &r, &d), PAGEWIRE_INVALID_HANDLE);
    CHECK(strcmp(pagewire_policy_name(&zero), "invalid") == 0);
    CHECK(strcmp(pagewire_policy_name(NULL), "invalid") == 0);
    CHECK_RC(pagewire_policy_decide(&p, NULL, &d), PAGEWIRE_NULL_ARGUMENT);
    CHECK_RC(pagewire_policy_xen_today(NULL), PAGEWIRE_NULL_ARGUMENT);
}

typedef struct {
    pagewire_group *g;
    pthread_barrier_t *round;
    uint32_t id, ready_at, final;
    int all_ready_when_stopped;
} member_arg;

static atomic_int ready_members;

/* A member on its own thread, reporting once per round (rounds in lockstep through a
 * barrier); it becomes ready at round `ready_at` (dirties as much as it sends from then). */
static void *member_thread(void *arg) {
    member_arg *m = arg;
    for (uint32_t it = 2; it < 40; it++) {
        if (!m->final) {
            int ready = it >= m->ready_at;
            if (it == m->ready_at)
                atomic_fetch_add(&ready_members, 1);
            pagewire_iteration_report r = rep(it, 1000, ready ? 1000 : 10, 100);
            pagewire_group_decision d = PAGEWIRE_GROUP_CONTINUE;
            if (pagewire_group_report(m->g, m->id, PAGEWIRE_DECISION_CONTINUE, &r, &d) ==
                    PAGEWIRE_OK &&
                d == PAGEWIRE_GROUP_STOP_AND_COPY) {
                m->final = it;
                m->all_ready_when_stopped = atomic_load(&ready_members);
            }
        }
        pthread_barrier_wait(m->round);
    }
    return NULL;
}

static void test_synchronized_arrival(void) {
    pagewire_group g;
    OK(pagewire_group_init(&g, 30));
    uint32_t small = 99, large = 99;
    OK(pagewire_group_join(&g, &small));
    OK(pagewire_group_join(&g, &large));
    CHECK(small != large);
    pagewire_group_decision d = 9;
    pagewire_iteration_report r = rep(2, 100, 10, 10);
    /* the same steps as the Rust test: the small VM waits for the large one */
    OK(pagewire_group_report(&g, small, PAGEWIRE_DECISION_STOP_AND_COPY, &r, &d));
    CHECK(d == PAGEWIRE_GROUP_HOLD);
    r = rep(2, 10000, 3000, 3000);
    OK(pagewire_group_report(&g, large, PAGEWIRE_DECISION_CONTINUE, &r, &d));
    CHECK(d == PAGEWIRE_GROUP_CONTINUE);
    bool ready = true;
    OK(pagewire_group_all_ready(&g, &ready));
    CHECK(!ready);
    r = rep(3, 3000, 3100, 3100);
    OK(pagewire_group_report(&g, large, PAGEWIRE_DECISION_CONTINUE, &r, &d));
    CHECK(d == PAGEWIRE_GROUP_STOP_AND_COPY);
    r = rep(4, 10, 5, 5);
    OK(pagewire_group_report(&g, small, PAGEWIRE_DECISION_CONTINUE, &r, &d));
    CHECK(d == PAGEWIRE_GROUP_STOP_AND_COPY);
    CHECK_RC(pagewire_group_report(&g, small, 5, &r, &d), PAGEWIRE_INVALID_ARGUMENT);
    size_t len = 0;
    OK(pagewire_group_len(&g, &len));
    CHECK(len == 2);
    for (size_t i = 2; i < PAGEWIRE_GROUP_CAPACITY; i++)
        OK(pagewire_group_join(&g, &small));
    CHECK_RC(pagewire_group_join(&g, &small), PAGEWIRE_GROUP_FULL);
    OK(pagewire_group_deinit(&g));
    CHECK_RC(pagewire_group_join(&g, &small), PAGEWIRE_INVALID_HANDLE);

    /* members on their own threads, ready at different rounds, released together: the
     * last one at the round it is ready, the others then or at their next report */
    enum { T = 4 };
    OK(pagewire_group_init(&g, 30));
    pthread_t th[T];
    pthread_barrier_t round;
    member_arg args[T];
    atomic_store(&ready_members, 0);
    CHECK(pthread_barrier_init(&round, NULL, T) == 0);
    for (int i = 0; i < T; i++) {
        args[i].g = &g;
        args[i].round = &round;
        args[i].ready_at = 3 + 5 * (uint32_t)i;
        args[i].final = 0;
        args[i].all_ready_when_stopped = -1;
        OK(pagewire_group_join(&g, &args[i].id));
    }
    for (int i = 0; i < T; i++)
        CHECK(pthread_create(&th[i], NULL, member_thread, &args[i]) == 0);
    for (int i = 0; i < T; i++)
        pthread_join(th[i], NULL);
    uint32_t last = args[T - 1].ready_at;
    CHECK(args[T - 1].final == last);
    for (int i = 0; i < T; i++) {
        CHECK(args[i].final == last || args[i].final == last + 1);
        CHECK(args[i].all_ready_when_stopped == T);
    }
    pthread_barrier_destroy(&round);
    OK(pagewire_group_all_ready(&g, &ready));
    CHECK(ready);
    OK(pagewire_group_deinit(&g));
}

/* ---------------------------------------------------------------- decoding in place */

/* Guest pfns of the in-place tests: two banks with a hole between, as below and above a
 * PCI hole. */
#define BANK 700u
#define HOLE 300u
#define IP_PAGES (2 * BANK + HOLE) /* pfn space, hole included */

static int in_hole(size_t pfn) { return pfn >= BANK && pfn < BANK + HOLE; }

/* A multi-pass stream of the pfns outside the hole (RAM left in `src`, IP_PAGES pages,
 * the hole zero), with the encoder's counters in `*es`. */
static bytes make_holed_stream(const pagewire_config *cfg, uint8_t *src,
                               pagewire_encoder_stats *es) {
    bytes s = {0};
    pagewire_sizes sz;
    pagewire_encoder *enc = NULL;
    OK(pagewire_config_sizes(cfg, &sz));
    OK(pagewire_encoder_new(cfg, &enc));
    uint8_t *out = malloc(sz.max_output);
    size_t n = 0;
    for (size_t pfn = 0; pfn < IP_PAGES; pfn++)
        if (!in_hole(pfn))
            fill_page(src, BANK, pfn); /* copies come from the first bank */
    for (int it = 0; it < 6; it++) {
        for (size_t pfn = 0; pfn < IP_PAGES; pfn++) {
            if (in_hole(pfn))
                continue;
            if (it > 0) {
                if (next_rand() % 5)
                    continue;
                dirty_page(src, BANK, pfn);
            }
            OK(pagewire_encoder_encode_page(enc, pfn, src + pfn * PAGE, PAGE, out,
                                            sz.max_output, &n));
            append(&s, out, n);
        }
        OK(pagewire_encoder_end_iteration(enc, out, sz.max_output, &n));
        append(&s, out, n);
    }
    OK(pagewire_encoder_finish(enc, out, sz.max_output, &n));
    append(&s, out, n);
    OK(pagewire_encoder_get_stats(enc, es));
    OK(pagewire_encoder_free(enc));
    free(out);
    return s;
}

/* Decodes the stream after its header in chunks of random size; returns the first failure
 * (PAGEWIRE_OK when the whole stream decoded and is complete). */
static pagewire_result decode_in_chunks(pagewire_decoder *dec, const bytes *s,
                                        const pagewire_destination *d, size_t *delivered) {
    size_t pos = PAGEWIRE_HEADER_LEN, avail = pos;
    *delivered = 0;
    while (pos < s->len) {
        avail += 1 + next_rand() % 20000;
        if (avail > s->len)
            avail = s->len;
        size_t consumed = 0, pages = 0;
        pagewire_result rc =
            pagewire_decoder_decode(dec, s->data + pos, avail - pos, d, &consumed, &pages);
        if (rc != PAGEWIRE_OK)
            return rc;
        pos += consumed;
        *delivered += pages;
        if (avail == s->len && consumed == 0)
            break;
    }
    return pagewire_decoder_check_complete(dec);
}

static pagewire_decoder *open_mode(const bytes *s, uint32_t flags) {
    pagewire_decoder *dec = NULL;
    size_t used = 0;
    OK(pagewire_decoder_open(s->data, s->len, NULL, 0, flags, &dec, &used));
    CHECK(used == PAGEWIRE_HEADER_LEN);
    return dec;
}

#define CANARY 0xA5

static size_t canary_bytes_changed(const uint8_t *p, size_t n) {
    size_t changed = 0;
    for (size_t i = 0; i < n; i++)
        changed += p[i] != CANARY;
    return changed;
}

/* The storage an in-place decoder asks for is the small figure, and it is enough. */
static void test_in_place_storage(void) {
    pagewire_config cfg;
    OK(pagewire_config_default(&cfg));
    pagewire_sizes sz;
    OK(pagewire_config_sizes(&cfg, &sz));
    size_t in_place = 0, copy = 0, untouched = 99;
    OK(pagewire_config_decoder_storage(&cfg, PAGEWIRE_DECODE_IN_PLACE, &in_place));
    OK(pagewire_config_decoder_storage(&cfg, 0, &copy));
    CHECK(copy == sz.decoder_storage);
    /* the codec's 364,552 bytes plus the handle, against 67,473,416 plus it and a page */
    CHECK(in_place >= 364552 && in_place <= 364552 + PAGEWIRE_STATE_OVERHEAD);
    CHECK(copy >= 67473416 + PAGE && copy <= 67473416 + PAGE + PAGEWIRE_STATE_OVERHEAD);
    CHECK(copy - in_place == (size_t)cfg.cache_pages * cfg.page_size + cfg.page_size);
    size_t bound = PAGEWIRE_DECODER_IN_PLACE_STORAGE_BOUND(cfg.page_size, cfg.cache_pages,
                                                            cfg.frame_bytes);
    CHECK(bound >= in_place && bound <= in_place + 1024);
    CHECK_RC(pagewire_config_decoder_storage(&cfg, 2, &untouched), PAGEWIRE_INVALID_ARGUMENT);
    CHECK_RC(pagewire_config_decoder_storage(&cfg, PAGEWIRE_DECODE_IN_PLACE | 4, &untouched),
             PAGEWIRE_INVALID_ARGUMENT);
    CHECK_RC(pagewire_config_decoder_storage(NULL, 0, &untouched), PAGEWIRE_NULL_ARGUMENT);
    CHECK_RC(pagewire_config_decoder_storage(&cfg, 0, NULL), PAGEWIRE_NULL_ARGUMENT);
    CHECK(untouched == 99);

    /* exactly that much, at an odd alignment, opens; a byte less does not */
    uint8_t header[PAGEWIRE_HEADER_LEN];
    OK(pagewire_config_header(&cfg, header, sizeof header));
    uint8_t *mem = malloc(in_place + 3);
    pagewire_decoder *dec = NULL;
    size_t used = 0;
    CHECK_RC(pagewire_decoder_open(header, sizeof header, mem + 3, in_place - 1,
                                   PAGEWIRE_DECODE_IN_PLACE, &dec, &used),
             PAGEWIRE_INSUFFICIENT_STORAGE);
    CHECK(dec == NULL);
    OK(pagewire_decoder_open(header, sizeof header, mem + 3, in_place, PAGEWIRE_DECODE_IN_PLACE,
                             &dec, &used));
    CHECK(dec != NULL && used == PAGEWIRE_HEADER_LEN);
    /* a cache copy does not fit there */
    pagewire_decoder *copy_dec = NULL;
    CHECK_RC(pagewire_decoder_open(header, sizeof header, mem + 3, in_place, 0, &copy_dec, &used),
             PAGEWIRE_INSUFFICIENT_STORAGE);
    OK(pagewire_decoder_close(dec));
    free(mem);
}

/* A multi-pass stream decoded in place into two RAM regions with a gap, and into a
 * scattered page table, equals the source and a cache-copy decode of the same stream. */
static void test_in_place_round_trip(void) {
    pagewire_config cfg = small_config(); /* 1024 cache pages: slots are reused */
    uint8_t *src = calloc(IP_PAGES, PAGE);
    pagewire_encoder_stats es;
    bytes s = make_holed_stream(&cfg, src, &es);
    /* the stream refers to earlier pages, which an in-place decoder reads back */
    CHECK(es.dup.pages > 0 && es.delta.pages > 0 && es.blocks.pages > 0);
    CHECK(es.iterations == 6);

    /* the reference: a cache copy into flat memory */
    uint8_t *flat = calloc(IP_PAGES, PAGE);
    pagewire_ram_region all = {0, IP_PAGES, flat};
    pagewire_destination into_flat = to_ram(&all, 1, no_events);
    pagewire_decoder *dec = open_mode(&s, 0);
    size_t delivered = 0;
    OK(decode_in_chunks(dec, &s, &into_flat, &delivered));
    CHECK(delivered == es.pages);
    CHECK(memcmp(flat, src, (size_t)IP_PAGES * PAGE) == 0);
    OK(pagewire_decoder_close(dec));

    /* in place, two regions (listed high bank first) in one buffer with a gap of canary
     * pages between them, and the page callback reading what was stored */
    enum { GAP = 5 };
    uint8_t *host = malloc((size_t)(2 * BANK + GAP) * PAGE);
    memset(host, CANARY, (size_t)(2 * BANK + GAP) * PAGE);
    uint8_t *low = host, *gap = host + (size_t)BANK * PAGE, *high = gap + (size_t)GAP * PAGE;
    pagewire_ram_region banks[2] = {{BANK + HOLE, BANK, high}, {0, BANK, low}};
    dest seen = {0};
    seen.ram = calloc(IP_PAGES, PAGE);
    seen.pages = IP_PAGES;
    pagewire_destination into_banks = to_ram(banks, 2, sink_for(&seen));
    dec = open_mode(&s, PAGEWIRE_DECODE_IN_PLACE);
    OK(decode_in_chunks(dec, &s, &into_banks, &delivered));
    CHECK(delivered == es.pages && seen.pages_seen == es.pages);
    CHECK(seen.iterations_seen == 6 && seen.ended && !seen.out_of_order);
    CHECK(memcmp(low, src, (size_t)BANK * PAGE) == 0);
    CHECK(memcmp(high, src + (size_t)(BANK + HOLE) * PAGE, (size_t)BANK * PAGE) == 0);
    CHECK(memcmp(low, flat, (size_t)BANK * PAGE) == 0);
    CHECK(memcmp(high, flat + (size_t)(BANK + HOLE) * PAGE, (size_t)BANK * PAGE) == 0);
    CHECK(canary_bytes_changed(gap, (size_t)GAP * PAGE) == 0);
    /* the callback saw each page's final bytes in guest memory */
    CHECK(memcmp(seen.ram, src, (size_t)IP_PAGES * PAGE) == 0);
    pagewire_decoder_stats ds;
    OK(pagewire_decoder_get_stats(dec, &ds));
    CHECK(ds.pages == es.pages && ds.bytes_in == s.len && ds.frames == es.frames);
    OK(pagewire_decoder_close(dec));

    /* in place, through a page table: each pfn at a random page of a larger buffer, the
     * pages between never written; the hole's entries NULL */
    enum { SPREAD = 3 };
    size_t slots = (size_t)SPREAD * IP_PAGES;
    uint8_t *pool = malloc(slots * PAGE);
    memset(pool, CANARY, slots * PAGE);
    size_t *order = malloc(slots * sizeof *order);
    for (size_t i = 0; i < slots; i++)
        order[i] = i;
    for (size_t i = slots - 1; i > 0; i--) {
        size_t j = next_rand() % (i + 1), t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
    uint8_t **table = calloc(IP_PAGES, sizeof *table);
    uint8_t *used_slot = calloc(slots, 1);
    for (size_t pfn = 0; pfn < IP_PAGES; pfn++)
        if (!in_hole(pfn)) {
            table[pfn] = pool + order[pfn] * PAGE;
            used_slot[order[pfn]] = 1;
        }
    pagewire_destination through_table = to_table(table, IP_PAGES, no_events);
    dec = open_mode(&s, PAGEWIRE_DECODE_IN_PLACE);
    OK(decode_in_chunks(dec, &s, &through_table, &delivered));
    CHECK(delivered == es.pages);
    size_t same = 0, sent = 0, untouched = 0;
    for (size_t pfn = 0; pfn < IP_PAGES; pfn++) {
        if (in_hole(pfn))
            continue;
        sent++;
        same += memcmp(table[pfn], src + pfn * PAGE, PAGE) == 0 &&
                memcmp(table[pfn], flat + pfn * PAGE, PAGE) == 0;
    }
    for (size_t i = 0; i < slots; i++)
        untouched += !used_slot[i] && canary_bytes_changed(pool + i * PAGE, PAGE) == 0;
    CHECK(sent == 2 * BANK && same == sent);
    CHECK(untouched == slots - 2 * BANK);
    OK(pagewire_decoder_close(dec));

    free(used_slot);
    free(table);
    free(order);
    free(pool);
    free(seen.ram);
    free(host);
    free(flat);
    free(s.data);
    free(src);
}

/* Lanes: a VMM with threads of its own runs N encoders, page pfn on lane pfn % N, and at
 * the destination N in-place decoders at once into one guest memory, each through a page
 * table that holds only its own lane's pages (NULL elsewhere): a lane's decoder can then
 * neither write nor read another lane's page. */
enum { LANES = 2, LN_PAGES = 512, LN_PASSES = 3 };

typedef struct {
    unsigned lane;
    uint8_t *src; /* guest memory: each lane writes only its own pages */
    bytes stream;
    pagewire_result rc;
} lane_encode_job;

static void *lane_encoder(void *arg) {
    lane_encode_job *j = arg;
    pagewire_config cfg = small_config();
    cfg.cache_pages /= LANES;        /* the cache budget split among lanes */
    cfg.stream_id += j->lane;        /* a lane's frames are refused on another */
    pagewire_sizes sz;
    pagewire_encoder *enc = NULL;
    j->rc = pagewire_config_sizes(&cfg, &sz);
    if (j->rc == PAGEWIRE_OK)
        j->rc = pagewire_encoder_new(&cfg, &enc);
    if (j->rc != PAGEWIRE_OK)
        return NULL;
    uint8_t *out = malloc(sz.max_output);
    size_t n = 0;
    for (unsigned it = 0; it < LN_PASSES && j->rc == PAGEWIRE_OK; it++) {
        for (size_t pfn = j->lane; pfn < LN_PAGES && j->rc == PAGEWIRE_OK; pfn += LANES) {
            uint8_t *page = j->src + pfn * PAGE;
            if (it > 0) {
                if ((pfn + it) % 3)
                    continue;
                page[(pfn * 13 + it) % PAGE] ^= (uint8_t)(it + 1); /* the guest wrote it */
            }
            j->rc = pagewire_encoder_encode_page(enc, pfn, page, PAGE, out, sz.max_output, &n);
            append(&j->stream, out, n);
        }
        if (j->rc == PAGEWIRE_OK)
            j->rc = pagewire_encoder_end_iteration(enc, out, sz.max_output, &n);
        append(&j->stream, out, n);
    }
    if (j->rc == PAGEWIRE_OK)
        j->rc = pagewire_encoder_finish(enc, out, sz.max_output, &n);
    append(&j->stream, out, n);
    pagewire_encoder_free(enc);
    free(out);
    return NULL;
}

typedef struct {
    const bytes *stream;
    uint8_t **table; /* LN_PAGES entries */
    size_t delivered;
    pagewire_result rc;
} lane_decode_job;

static void *lane_decoder(void *arg) {
    lane_decode_job *j = arg;
    pagewire_decoder *dec = NULL;
    size_t used = 0, consumed = 0;
    j->rc = pagewire_decoder_open(j->stream->data, j->stream->len, NULL, 0,
                                  PAGEWIRE_DECODE_IN_PLACE, &dec, &used);
    if (j->rc != PAGEWIRE_OK)
        return NULL;
    pagewire_destination d = to_table(j->table, LN_PAGES, no_events);
    j->rc = pagewire_decoder_decode(dec, j->stream->data + used, j->stream->len - used, &d,
                                    &consumed, &j->delivered);
    if (j->rc == PAGEWIRE_OK)
        j->rc = pagewire_decoder_check_complete(dec);
    pagewire_decoder_close(dec);
    return NULL;
}

static void test_lanes_on_threads(void) {
    uint8_t *src = calloc(LN_PAGES, PAGE);
    for (size_t pfn = 0; pfn < LN_PAGES; pfn++)
        fill_page(src, LN_PAGES, pfn);
    lane_encode_job enc[LANES];
    pthread_t th[LANES];
    for (unsigned l = 0; l < LANES; l++) {
        enc[l] = (lane_encode_job){l, src, {0}, PAGEWIRE_OK};
        CHECK(pthread_create(&th[l], NULL, lane_encoder, &enc[l]) == 0);
    }
    for (unsigned l = 0; l < LANES; l++) {
        pthread_join(th[l], NULL);
        CHECK_RC(enc[l].rc, PAGEWIRE_OK);
    }

    uint8_t *dst = malloc((size_t)LN_PAGES * PAGE);
    memset(dst, CANARY, (size_t)LN_PAGES * PAGE);
    uint8_t **tables[LANES];
    lane_decode_job dec[LANES];
    for (unsigned l = 0; l < LANES; l++) {
        tables[l] = calloc(LN_PAGES, sizeof(uint8_t *));
        for (size_t pfn = l; pfn < LN_PAGES; pfn += LANES)
            tables[l][pfn] = dst + pfn * PAGE;
        dec[l] = (lane_decode_job){&enc[l].stream, tables[l], 0, PAGEWIRE_OK};
        CHECK(pthread_create(&th[l], NULL, lane_decoder, &dec[l]) == 0);
    }
    for (unsigned l = 0; l < LANES; l++) {
        pthread_join(th[l], NULL);
        CHECK_RC(dec[l].rc, PAGEWIRE_OK);
    }
    CHECK(memcmp(dst, src, (size_t)LN_PAGES * PAGE) == 0);

    /* lane 1's stream through lane 0's table: its first page has no place there */
    lane_decode_job wrong = {&enc[1].stream, tables[0], 0, PAGEWIRE_OK};
    lane_decoder(&wrong);
    CHECK_RC(wrong.rc, PAGEWIRE_PFN_OUT_OF_RANGE);
    CHECK(wrong.delivered == 0);

    for (unsigned l = 0; l < LANES; l++) {
        free(tables[l]);
        free(enc[l].stream.data);
    }
    free(dst);
    free(src);
}

/* CRC-32C (Castagnoli), bit by bit: for hand-made frames. */
static uint32_t crc32c(const uint8_t *p, size_t n) {
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ (0x82f63b78u & (0u - (c & 1u)));
    }
    return ~c;
}

static void put_le32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* Appends a frame (records, stored) of `body` to a stream (docs/FORMAT.md: type, flags,
 * reserved, stream id, sequence number, body lengths; the body; its CRC-32C). */
static void append_frame(bytes *s, uint32_t stream_id, uint32_t seq, const uint8_t *body,
                         size_t len) {
    size_t at = s->len;
    uint8_t h[PAGEWIRE_FRAME_HEADER_LEN] = {1, 0, 0, 0};
    put_le32(h + 4, stream_id);
    put_le32(h + 8, seq);
    put_le32(h + 12, (uint32_t)len);
    put_le32(h + 16, (uint32_t)len);
    append(s, h, sizeof h);
    append(s, body, len);
    uint8_t crc[4];
    put_le32(crc, crc32c(s->data + at, s->len - at));
    append(s, crc, 4);
}

/* Records (docs/FORMAT.md): RAW pfn 0 full of 7s; ZERO of pfn 0, which retires its slot;
 * DUP of the slot of age 1 (pfn 0's, retired) for the next pfn. */
static size_t retiring_records(uint8_t *body, int with_dup) {
    size_t n = 0;
    body[n++] = 0x03; /* RAW */
    body[n++] = 0x00; /* pfn 0 */
    memset(body + n, 7, PAGE);
    n += PAGE;
    body[n++] = 0x01; /* ZERO */
    body[n++] = 0x01; /* pfn 0 (zigzag -1 from the next pfn, 1) */
    if (with_dup) {
        body[n++] = 0x02; /* DUP */
        body[n++] = 0x00; /* pfn 1 */
        body[n++] = 0x01; /* age 1 */
    }
    return n;
}

/* A reference to a retired slot is refused with PAGEWIRE_RETIRED_SLOT in both modes,
 * before anything of its frame is written. */
static void test_retired_slot_is_refused(void) {
    pagewire_config cfg;
    OK(pagewire_config_default(&cfg));
    cfg.cache_pages = 2;
    cfg.lz4 = 0;
    cfg.frame_bytes = 16384;
    cfg.stream_id = 3;
    uint8_t header[PAGEWIRE_HEADER_LEN];
    OK(pagewire_config_header(&cfg, header, sizeof header));
    uint8_t body[PAGE + 16];
    /* one frame: RAW 0, ZERO 0, DUP of the retired slot */
    bytes one = {0};
    append(&one, header, sizeof header);
    append_frame(&one, cfg.stream_id, 0, body, retiring_records(body, 1));
    /* two frames: RAW 0, ZERO 0; then a DUP of pfn 0's retired slot for pfn 0 itself */
    bytes two = {0};
    append(&two, header, sizeof header);
    append_frame(&two, cfg.stream_id, 0, body, retiring_records(body, 0));
    static const uint8_t dup_again[] = {0x02, 0x01, 0x01};
    append_frame(&two, cfg.stream_id, 1, dup_again, sizeof dup_again);

    static const uint32_t modes[] = {0, PAGEWIRE_DECODE_IN_PLACE};
    for (size_t m = 0; m < 2; m++) {
        uint8_t *ram = malloc(2 * PAGE);
        pagewire_ram_region r = {0, 2, ram};
        pagewire_destination into_ram = to_ram(&r, 1, no_events);
        size_t consumed = 77, pages = 77;

        memset(ram, CANARY, 2 * PAGE);
        pagewire_decoder *dec = open_mode(&one, modes[m]);
        CHECK_RC(pagewire_decoder_decode(dec, one.data + PAGEWIRE_HEADER_LEN,
                                         one.len - PAGEWIRE_HEADER_LEN, &into_ram, &consumed,
                                         &pages),
                 PAGEWIRE_RETIRED_SLOT);
        CHECK(consumed == 77 && pages == 77);
        CHECK(canary_bytes_changed(ram, 2 * PAGE) == 0); /* nothing of the frame written */
        CHECK_RC(pagewire_decoder_check_complete(dec), PAGEWIRE_FINISHED);
        OK(pagewire_decoder_close(dec));

        memset(ram, CANARY, 2 * PAGE);
        dec = open_mode(&two, modes[m]);
        CHECK_RC(pagewire_decoder_decode(dec, two.data + PAGEWIRE_HEADER_LEN,
                                         two.len - PAGEWIRE_HEADER_LEN, &into_ram, &consumed,
                                         &pages),
                 PAGEWIRE_RETIRED_SLOT);
        /* the first frame was applied: pfn 0 zeroed; pfn 1 never written */
        size_t zeros = 0;
        for (size_t i = 0; i < PAGE; i++)
            zeros += ram[i] == 0;
        CHECK(zeros == PAGE);
        CHECK(canary_bytes_changed(ram + PAGE, PAGE) == 0);
        OK(pagewire_decoder_close(dec));
        free(ram);
    }
    free(one.data);
    free(two.data);
}

/* An in-place decoder refuses what would leave wrong bytes or alias memory: callbacks
 * alone (before reading any input; the decoder stays usable), two pfns on the same host
 * page, a pfn without a page. */
static void test_in_place_refusals(void) {
    pagewire_config cfg = small_config();
    cfg.lz4 = 0;
    pagewire_sizes sz;
    OK(pagewire_config_sizes(&cfg, &sz));
    /* pfn 0 random, pfn 1 the same bytes: a DUP that copies page 0 to page 1 */
    uint8_t *src = malloc(2 * PAGE);
    for (size_t i = 0; i < PAGE; i += 8) {
        uint64_t r = next_rand();
        memcpy(src + i, &r, 8);
    }
    memcpy(src + PAGE, src, PAGE);
    pagewire_encoder *enc = NULL;
    OK(pagewire_encoder_new(&cfg, &enc));
    uint8_t *out = malloc(sz.max_output);
    bytes s = {0};
    size_t n = 0;
    for (size_t pfn = 0; pfn < 2; pfn++) {
        OK(pagewire_encoder_encode_page(enc, pfn, src + pfn * PAGE, PAGE, out, sz.max_output,
                                        &n));
        append(&s, out, n);
    }
    OK(pagewire_encoder_finish(enc, out, sz.max_output, &n));
    append(&s, out, n);
    pagewire_encoder_stats es;
    OK(pagewire_encoder_get_stats(enc, &es));
    CHECK(es.raw.pages == 1 && es.dup.pages == 1);
    OK(pagewire_encoder_free(enc));
    const uint8_t *body = s.data + PAGEWIRE_HEADER_LEN;
    size_t body_len = s.len - PAGEWIRE_HEADER_LEN;

    /* callbacks alone: refused, nothing consumed; the same decoder then decodes into RAM */
    dest d = {0};
    d.ram = calloc(2, PAGE);
    d.pages = 2;
    pagewire_destination to_sink = to_callbacks(sink_for(&d));
    pagewire_decoder *dec = open_mode(&s, PAGEWIRE_DECODE_IN_PLACE);
    size_t consumed = 55, pages = 55;
    CHECK_RC(pagewire_decoder_decode(dec, body, body_len, &to_sink, &consumed, &pages),
             PAGEWIRE_INVALID_ARGUMENT);
    char msg[256];
    OK(pagewire_last_error_message(msg, sizeof msg, NULL));
    CHECK(strstr(msg, "PAGEWIRE_DECODE_IN_PLACE") != NULL);
    CHECK(consumed == 55 && pages == 55 && d.pages_seen == 0);
    uint8_t *ram = calloc(2, PAGE);
    pagewire_ram_region r = {0, 2, ram};
    pagewire_destination into_ram = to_ram(&r, 1, sink_for(&d));
    OK(pagewire_decoder_decode(dec, body, body_len, &into_ram, &consumed, &pages));
    CHECK(consumed == body_len && pages == 2 && d.pages_seen == 2);
    OK(pagewire_decoder_check_complete(dec));
    CHECK(memcmp(ram, src, 2 * PAGE) == 0 && memcmp(d.ram, src, 2 * PAGE) == 0);
    OK(pagewire_decoder_close(dec));

    /* a cache copy still delivers to callbacks alone */
    memset(d.ram, 0, 2 * PAGE);
    dec = open_mode(&s, 0);
    OK(pagewire_decoder_decode(dec, body, body_len, &to_sink, &consumed, &pages));
    CHECK(memcmp(d.ram, src, 2 * PAGE) == 0);
    OK(pagewire_decoder_close(dec));

    /* pfns 0 and 1 on one host page: the DUP would read and write it at once */
    uint8_t *one_page = calloc(1, PAGE);
    uint8_t *aliased[2] = {one_page, one_page};
    pagewire_destination through_aliases = to_table(aliased, 2, no_events);
    dec = open_mode(&s, PAGEWIRE_DECODE_IN_PLACE);
    CHECK_RC(pagewire_decoder_decode(dec, body, body_len, &through_aliases, &consumed, &pages),
             PAGEWIRE_INVALID_ARGUMENT);
    OK(pagewire_last_error_message(msg, sizeof msg, NULL));
    CHECK(strstr(msg, "share host memory") != NULL);
    CHECK_RC(pagewire_decoder_decode(dec, body, body_len, &into_ram, &consumed, &pages),
             PAGEWIRE_FINISHED);
    OK(pagewire_decoder_close(dec));

    /* pfn 1 has no page */
    uint8_t *short_table[1] = {ram};
    pagewire_destination too_short = to_table(short_table, 1, no_events);
    dec = open_mode(&s, PAGEWIRE_DECODE_IN_PLACE);
    CHECK_RC(pagewire_decoder_decode(dec, body, body_len, &too_short, &consumed, &pages),
             PAGEWIRE_PFN_OUT_OF_RANGE);
    OK(pagewire_decoder_close(dec));

    free(one_page);
    free(ram);
    free(d.ram);
    free(s.data);
    free(out);
    free(src);
}

/* An in-place decoder in static memory, sized at compile time. */
static uint8_t static_in_place[PAGEWIRE_DECODER_IN_PLACE_STORAGE_BOUND(PAGE, 16384, 65536)];

static void test_in_place_static_storage(void) {
    pagewire_config cfg;
    OK(pagewire_config_default(&cfg));
    CHECK(sizeof static_in_place < 400000);
    enum { PAGES = 64 };
    uint8_t *src = calloc(PAGES, PAGE), *got = calloc(PAGES, PAGE);
    bytes s = make_stream(&cfg, src, PAGES, 3);
    pagewire_decoder *dec = NULL;
    size_t used = 0, consumed = 0;
    OK(pagewire_decoder_open(s.data, s.len, static_in_place, sizeof static_in_place,
                             PAGEWIRE_DECODE_IN_PLACE, &dec, &used));
    pagewire_ram_region r = {0, PAGES, got};
    pagewire_destination into_ram = to_ram(&r, 1, no_events);
    OK(pagewire_decoder_decode(dec, s.data + used, s.len - used, &into_ram, &consumed, NULL));
    CHECK(consumed == s.len - used);
    OK(pagewire_decoder_check_complete(dec));
    CHECK(memcmp(src, got, (size_t)PAGES * PAGE) == 0);
    OK(pagewire_decoder_close(dec));
    free(s.data);
    free(got);
    free(src);
}

/* ---------------------------------------------------------------- zstd over the stream */

#ifdef PAGEWIRE_ZSTD
/* Sends `s` through a zstd stage in pieces of random size, changing the level (and to
 * stored chunks) on the way and flushing now and then, as a source does at iteration ends. */
static bytes zstd_link(const bytes *s) {
    static const int32_t levels[] = {3, 0, -1, 1, 6};
    bytes link = {0};
    pagewire_zstd_out *z = NULL;
    OK(pagewire_zstd_out_new(levels[0], &z));
    const uint8_t *ready = NULL;
    size_t n = 0, pos = 0;
    for (int piece = 1; pos < s->len; piece++) {
        size_t len = 1 + next_rand() % 40000;
        if (len > s->len - pos)
            len = s->len - pos;
        if (piece % 25 == 0)
            OK(pagewire_zstd_out_set_level(z, levels[(piece / 25) % 5]));
        OK(pagewire_zstd_out_write(z, s->data + pos, len, &ready, &n));
        append(&link, ready, n);
        if (piece % 7 == 0) {
            OK(pagewire_zstd_out_flush(z, &ready, &n));
            append(&link, ready, n);
        }
        pos += len;
    }
    OK(pagewire_zstd_out_finish(z, &ready, &n));
    append(&link, ready, n);
    CHECK_RC(pagewire_zstd_out_write(z, s->data, 1, &ready, &n), PAGEWIRE_FINISHED);
    OK(pagewire_zstd_out_free(z));
    return link;
}

/* Pushes `link` into a zstd stage in pieces of random size with a stream buffer of 777
 * bytes; returns the stream, and in *taken how many link bytes were taken. */
static pagewire_result zstd_unlink(const bytes *link, bytes *stream, size_t *taken) {
    pagewire_zstd_in *z = NULL;
    pagewire_result r = pagewire_zstd_in_new(&z);
    if (r != PAGEWIRE_OK)
        return r;
    uint8_t buf[777];
    size_t pos = 0;
    for (;;) {
        size_t len = 1 + next_rand() % 9000;
        if (len > link->len - pos)
            len = link->len - pos;
        size_t consumed = 0, produced = 0, wants = 0;
        bool ended = false;
        r = pagewire_zstd_in_feed(z, link->data + pos, len, buf, sizeof buf, &consumed,
                                  &produced, &ended, &wants);
        if (r != PAGEWIRE_OK)
            break;
        CHECK(consumed <= len && produced <= sizeof buf);
        pos += consumed;
        append(stream, buf, produced);
        if (ended) {
            CHECK(wants == 0);
            break;
        }
        if (consumed == 0 && produced == 0 && pos == link->len) {
            r = PAGEWIRE_TRUNCATED;
            break;
        }
    }
    *taken = pos;
    if (r == PAGEWIRE_BAD_ZSTD_STREAM) {
        /* a stage that failed takes nothing more */
        size_t c = 0, p = 0;
        bool e = false;
        CHECK_RC(pagewire_zstd_in_feed(z, link->data, 1, buf, 1, &c, &p, &e, NULL),
                 PAGEWIRE_FINISHED);
    }
    OK(pagewire_zstd_in_free(z));
    return r;
}

static void test_zstd_over_the_stream(void) {
    pagewire_config cfg = small_config();
    cfg.lz4 = 0; /* zstd takes LZ4's place */
    uint8_t *src = calloc(2000, PAGE);
    bytes s = make_stream(&cfg, src, 2000, 4);
    bytes link = zstd_link(&s);
    CHECK(link.len < s.len * 3 / 4); /* zstd finds what the codec left */
    size_t end = link.len;
    append(&link, (const uint8_t *)"NEXT", 4); /* the caller's next message */

    bytes back = {0};
    size_t taken = 0;
    OK(zstd_unlink(&link, &back, &taken));
    CHECK(taken == end); /* the message after the end chunk was left alone */
    CHECK(back.len == s.len && memcmp(back.data, s.data, s.len) == 0);

    /* the stream that came out decodes in place into the destination's RAM */
    uint8_t *ram = calloc(2000, PAGE);
    pagewire_ram_region all = {0, 2000, ram};
    pagewire_destination into_ram = to_ram(&all, 1, no_events);
    pagewire_decoder *dec = open_mode(&back, PAGEWIRE_DECODE_IN_PLACE);
    size_t delivered = 0;
    OK(decode_in_chunks(dec, &back, &into_ram, &delivered));
    CHECK(memcmp(ram, src, (size_t)2000 * PAGE) == 0);
    OK(pagewire_decoder_close(dec));

    /* damage: a chunk length over the limit, and zstd data that does not decode */
    bytes bad = {0};
    append(&bad, link.data, link.len);
    memset(bad.data, 0x7f, 4);
    bytes junk = {0};
    CHECK_RC(zstd_unlink(&bad, &junk, &taken), PAGEWIRE_BAD_ZSTD_STREAM);
    memcpy(bad.data, link.data, 4);
    for (size_t i = 4; i < 64 && i < bad.len; i++)
        bad.data[i] ^= 0xa5;
    junk.len = 0;
    pagewire_result r = zstd_unlink(&bad, &junk, &taken);
    CHECK(r == PAGEWIRE_BAD_ZSTD_STREAM ||
          (r == PAGEWIRE_OK && (junk.len != s.len || memcmp(junk.data, s.data, s.len) != 0)));
    /* cut short: no end, never more than the stream */
    bytes cut = {0};
    append(&cut, link.data, end / 2);
    junk.len = 0;
    CHECK_RC(zstd_unlink(&cut, &junk, &taken), PAGEWIRE_TRUNCATED);
    CHECK(junk.len < s.len && memcmp(junk.data, s.data, junk.len) == 0);

    /* arguments and handles */
    pagewire_zstd_out *zo = NULL;
    pagewire_zstd_in *zi = NULL;
    const uint8_t *ready = NULL;
    size_t n = 0, c = 0, p = 0;
    bool e = false;
    CHECK_RC(pagewire_zstd_out_new(23, &zo), PAGEWIRE_INVALID_ARGUMENT);
    CHECK_RC(pagewire_zstd_out_new(1, NULL), PAGEWIRE_NULL_ARGUMENT);
    OK(pagewire_zstd_out_new(-5, &zo));
    OK(pagewire_zstd_in_new(&zi));
    CHECK_RC(pagewire_zstd_out_set_level(zo, 1000), PAGEWIRE_INVALID_ARGUMENT);
    CHECK_RC(pagewire_zstd_out_write(zo, NULL, 5, &ready, &n), PAGEWIRE_NULL_ARGUMENT);
    CHECK_RC(pagewire_zstd_out_flush(zo, NULL, &n), PAGEWIRE_NULL_ARGUMENT);
    CHECK_RC(pagewire_zstd_in_feed(zi, link.data, 4, NULL, 8, &c, &p, &e, NULL),
             PAGEWIRE_NULL_ARGUMENT);
    /* one kind of stage is not the other */
    CHECK_RC(pagewire_zstd_out_flush((pagewire_zstd_out *)zi, &ready, &n),
             PAGEWIRE_INVALID_HANDLE);
    CHECK_RC(pagewire_zstd_in_free((pagewire_zstd_in *)zo), PAGEWIRE_INVALID_HANDLE);
    OK(pagewire_zstd_out_free(zo));
    OK(pagewire_zstd_in_free(zi));
    CHECK_RC(pagewire_zstd_out_free(zo), PAGEWIRE_INVALID_HANDLE);
    CHECK_RC(pagewire_zstd_in_free(zi), PAGEWIRE_INVALID_HANDLE);
    OK(pagewire_zstd_out_free(NULL));
    OK(pagewire_zstd_in_free(NULL));

    free(s.data);
    free(link.data);
    free(back.data);
    free(bad.data);
    free(junk.data);
    free(cut.data);
    free(ram);
    free(src);
}
#endif

/* ---------------------------------------------------------------- main */

int main(void) {
    static const struct {
        const char *name;
        void (*run)(void);
    } tests[] = {
        {"version", test_version},
        {"every_result_has_a_name", test_every_result_has_a_name},
        {"config_and_sizes", test_config_and_sizes},
        {"round_trip", test_round_trip},
        {"corruption_is_rejected", test_corruption_is_rejected},
        {"null_and_undersized_arguments", test_null_and_undersized_arguments},
        {"handles_are_checked", test_handles_are_checked},
        {"released_handles_are_refused", test_released_handles_are_refused},
        {"pages_written_while_encoding", test_pages_written_while_encoding},
        {"plain_pages_in_bulk", test_plain_pages_in_bulk},
        {"static_storage", test_static_storage},
        {"policies_answer_as_in_rust", test_policies_answer_as_in_rust},
        {"synchronized_arrival", test_synchronized_arrival},
        {"in_place_storage", test_in_place_storage},
        {"in_place_round_trip", test_in_place_round_trip},
        {"retired_slot_is_refused", test_retired_slot_is_refused},
        {"in_place_refusals", test_in_place_refusals},
        {"in_place_static_storage", test_in_place_static_storage},
        {"lanes_on_threads", test_lanes_on_threads},
#ifdef PAGEWIRE_ZSTD
        {"zstd_over_the_stream", test_zstd_over_the_stream},
#endif
    };
    int passed = 0, failed = 0;
    for (size_t i = 0; i < sizeof tests / sizeof tests[0]; i++) {
        int before = failures;
        tests[i].run();
        int ok = failures == before;
        printf("c test %s ... %s\n", tests[i].name, ok ? "ok" : "FAILED");
        passed += ok;
        failed += !ok;
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
