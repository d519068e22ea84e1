/*
 * vr-fuzz.h: the libFuzzer entry point every fuzz target defines
 *
 * A target is built twice: with clang's libFuzzer, which supplies main(), and with the
 * project's compiler and fuzz-main.c, a driver that replays a corpus and deterministic
 * mutations of it, so the fuzz suite runs without clang too.
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

/* Run one input; returns 0 (libFuzzer reserves other values). Crashes on a found bug. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/*
 * How many bytes to feed next, so that one input also chooses how it is cut: @mode 0 all
 * at once, 1 a byte at a time, 2 a fixed size from @control, 3 pseudo-random sizes from
 * @state (xorshift32: cheap, and deterministic for a given input). At most @left.
 */
static inline size_t
vr_fuzz_next_chunk(uint8_t mode, uint8_t control, uint32_t *state, size_t left)
{
    size_t n;

    switch (mode) {
    case 0:
        return left;
    case 1:
        return 1;
    case 2:
        n = (size_t)(control >> 2) + 1;
        break;
    default:
        *state ^= *state << 13;
        *state ^= *state >> 17;
        *state ^= *state << 5;
        n = *state % 65;
        break;
    }
    return n < left ? n : left;
}
