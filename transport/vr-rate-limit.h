/*
 * vr-rate-limit.h: bandwidth limits of replication traffic
 *
 * A token bucket per host and one per relationship. A transfer reserves its bytes from
 * every bucket that applies and waits for the longest of their answers before sending, so
 * the host's limit and each relationship's hold together. Buckets may go into debt: a
 * reservation is never refused, its wait grows instead, and a burst allowance lets short
 * transfers through at once. Rates can follow a time-of-day schedule, like Hyper-V's
 * bandwidth throttling windows ("Mon-Fri 08:00-18:00 10M, * 00:00-24:00 0").
 *
 * Thread-safe: a bucket may be shared by transfers in several threads.
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include <glib.h>

G_BEGIN_DECLS

#define VR_RATE_LIMIT_ERROR (vr_rate_limit_error_quark())
GQuark vr_rate_limit_error_quark(void);

typedef enum {
    VR_RATE_LIMIT_ERROR_PARSE, /* a schedule or a rate that does not parse; names the part */
} VrRateLimitErrorCode;

typedef struct _VrRateLimit VrRateLimit;

/* A bucket of @rate bytes per second (0: unlimited) holding at most @burst bytes, full at
 * first. (transfer full) */
VrRateLimit *vr_rate_limit_new(uint64_t rate, uint64_t burst);
void vr_rate_limit_free(VrRateLimit *limit);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VrRateLimit, vr_rate_limit_free)

/* Change the rate (a schedule's new window); tokens earned so far are kept. */
void vr_rate_limit_set_rate(VrRateLimit *limit, uint64_t rate, int64_t now_us);
uint64_t vr_rate_limit_get_rate(VrRateLimit *limit);

/*
 * Reserve @bytes at monotonic time @now_us from each of the @n_limits buckets (NULL
 * entries are skipped) and return how long to wait, in microseconds, before sending them:
 * the longest of the buckets' waits (0 when all have the tokens).
 */
int64_t vr_rate_limit_reserve(VrRateLimit *const *limits, guint n_limits, uint64_t bytes,
                              int64_t now_us);

/* "10M", "512K", "1G", "1500" (bytes per second; K = 1024), "0" or "unlimited". */
bool vr_rate_parse(const char *text, uint64_t *rate, GError **error);

typedef struct _VrRateSchedule VrRateSchedule;

/*
 * Parse a schedule: windows separated by ',', each "DAYS HH:MM-HH:MM RATE" where DAYS is
 * '*', a day ("Mon") or a range ("Mon-Fri", "Sat-Sun"); a window that ends before it starts
 * runs over midnight ("Mon-Fri 22:00-06:00 0": from Monday 22:00 to Tuesday 06:00, ...). The
 * first window that contains a moment gives its rate; outside every window, @default_rate.
 * (transfer full)
 */
VrRateSchedule *vr_rate_schedule_parse(const char *text, uint64_t default_rate, GError **error);
void vr_rate_schedule_free(VrRateSchedule *schedule);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VrRateSchedule, vr_rate_schedule_free)

/* The rate at local time @when. */
uint64_t vr_rate_schedule_rate_at(VrRateSchedule *schedule, GDateTime *when);

G_END_DECLS
