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
