/* Prints the size and alignment of every public type of pagewire.h and the offset of every
 * field, as the C compiler sees them, and what the _BOUND macros make of a spread of
 * configurations; tests/c_api.rs compares them with Rust's view. */
#include "pagewire.h"

#include <stdalign.h>
#include <stddef.h>
#include <stdio.h>

#define TYPE(T) printf(#T " %zu %zu\n", sizeof(T), alignof(T))
#define FIELD(T, f) printf(#T "." #f " %zu\n", offsetof(T, f))

int main(void) {
    TYPE(pagewire_result);
    TYPE(pagewire_decision);
    TYPE(pagewire_group_decision);
    TYPE(pagewire_destination_kind);

    TYPE(pagewire_config);
    FIELD(pagewire_config, page_size);
    FIELD(pagewire_config, cache_pages);
    FIELD(pagewire_config, delta_threshold);
    FIELD(pagewire_config, frame_bytes);
    FIELD(pagewire_config, stream_id);
    FIELD(pagewire_config, blocks_per_page);
    FIELD(pagewire_config, lz4);
    FIELD(pagewire_config, reserved);

    TYPE(pagewire_sizes);
    FIELD(pagewire_sizes, encoder_storage);
    FIELD(pagewire_sizes, decoder_storage);
    FIELD(pagewire_sizes, max_output);
    FIELD(pagewire_sizes, max_frame);
    FIELD(pagewire_sizes, max_blob);

    TYPE(pagewire_page_in);
    FIELD(pagewire_page_in, pfn);
    FIELD(pagewire_page_in, data);

    TYPE(pagewire_sink);
    FIELD(pagewire_sink, user);
    FIELD(pagewire_sink, page);
    FIELD(pagewire_sink, iteration_end);
    FIELD(pagewire_sink, blob);
    FIELD(pagewire_sink, end_of_stream);

    TYPE(pagewire_ram_region);
    FIELD(pagewire_ram_region, first_pfn);
    FIELD(pagewire_ram_region, page_count);
    FIELD(pagewire_ram_region, host);

    TYPE(pagewire_destination);
    FIELD(pagewire_destination, kind);
    FIELD(pagewire_destination, reserved);
    FIELD(pagewire_destination, regions);
    FIELD(pagewire_destination, region_count);
    FIELD(pagewire_destination, page_table);
    FIELD(pagewire_destination, page_table_len);
    FIELD(pagewire_destination, events);

    TYPE(pagewire_kind_stats);
    FIELD(pagewire_kind_stats, pages);
    FIELD(pagewire_kind_stats, bytes);

    TYPE(pagewire_encoder_stats);
    FIELD(pagewire_encoder_stats, zero);
    FIELD(pagewire_encoder_stats, dup);
    FIELD(pagewire_encoder_stats, raw);
    FIELD(pagewire_encoder_stats, delta);
    FIELD(pagewire_encoder_stats, blocks);
    FIELD(pagewire_encoder_stats, block_zero);
    FIELD(pagewire_encoder_stats, block_ref);
    FIELD(pagewire_encoder_stats, block_literal);
    FIELD(pagewire_encoder_stats, block_delta);
    FIELD(pagewire_encoder_stats, cache_hits);
    FIELD(pagewire_encoder_stats, delta_uses);
    FIELD(pagewire_encoder_stats, bytes_in);
    FIELD(pagewire_encoder_stats, bytes_out);
    FIELD(pagewire_encoder_stats, frames);
    FIELD(pagewire_encoder_stats, frames_lz4);
    FIELD(pagewire_encoder_stats, blobs);
    FIELD(pagewire_encoder_stats, blob_bytes);
    FIELD(pagewire_encoder_stats, iterations);
    FIELD(pagewire_encoder_stats, pages);

    TYPE(pagewire_decoder_stats);
    FIELD(pagewire_decoder_stats, pages);
    FIELD(pagewire_decoder_stats, frames);
    FIELD(pagewire_decoder_stats, bytes_in);
    FIELD(pagewire_decoder_stats, blobs);
    FIELD(pagewire_decoder_stats, iterations);

    TYPE(pagewire_iteration_report);
    FIELD(pagewire_iteration_report, iteration);
    FIELD(pagewire_iteration_report, reserved);
    FIELD(pagewire_iteration_report, pages_sent);
    FIELD(pagewire_iteration_report, pages_dirtied);
    FIELD(pagewire_iteration_report, pages_remaining);
    FIELD(pagewire_iteration_report, bytes_sent);
    FIELD(pagewire_iteration_report, elapsed_us);
    FIELD(pagewire_iteration_report, bandwidth_bytes_per_s);

    TYPE(pagewire_policy);
    TYPE(pagewire_group);

    /* page_size, blocks_per_page, cache_pages, frame_bytes: the smallest configuration, the
     * default, odd ones, the largest (the same list as rust_layout() in tests/c_api.rs) */
    static const size_t configs[][4] = {
        {4096, 1, 1, 4128},         {4096, 4, 16384, 65536},       {8192, 2, 1000, 40000},
        {16384, 8, 99999, 16416},   {65536, 8, 1u << 26, 1u << 24},
    };
    for (size_t i = 0; i < sizeof configs / sizeof configs[0]; i++) {
        const size_t *c = configs[i];
        printf("bounds %zu %zu %zu %zu: %zu %zu %zu %zu\n", c[0], c[1], c[2], c[3],
               PAGEWIRE_ENCODER_STORAGE_BOUND(c[0], c[1], c[2], c[3]),
               PAGEWIRE_DECODER_STORAGE_BOUND(c[0], c[2], c[3]),
               PAGEWIRE_DECODER_IN_PLACE_STORAGE_BOUND(c[0], c[2], c[3]),
               PAGEWIRE_MAX_OUTPUT_BOUND(c[3]));
    }
    return 0;
}
