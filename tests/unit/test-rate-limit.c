/*
 * test-rate-limit.c: token buckets and bandwidth schedules
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include <string.h>

#include "vr-rate-limit.h"

#define MB (1024 * 1024)

/*
 * A sender that obeys the limiter, against the model of a token bucket: over every window,
 * from the reservation r_j of a transfer to the moment t_i another one goes, at most
 * burst + rate * (t_i - r_j) bytes go. And a sender always ready is not held back below
 * the rate either.
 */
#define WINDOW 64

static void
test_model(void)
{
    g_autoptr(GRand) rand = g_rand_new_with_seed(g_test_rand_int());

    for (int iter = 0; iter < 50; iter++) {
        uint64_t rate = (uint64_t)g_rand_int_range(rand, 1, 100) * MB / 10;
        uint64_t burst = (uint64_t)g_rand_int_range(rand, 1, 16) * 65536;
        g_autoptr(VrRateLimit) limit = vr_rate_limit_new(rate, burst);
        VrRateLimit *limits[] = { limit };
        int64_t reserved_at[WINDOW];
        uint64_t bytes_of[WINDOW];
        int64_t now = 1000000;
        int64_t start = now;
        uint64_t sent = 0;

        for (int i = 0; i < 2000; i++) {
            uint64_t bytes = (uint64_t)g_rand_int_range(rand, 1, 4 * MB);
            int64_t wait;
            uint64_t sum = 0;

            reserved_at[i % WINDOW] = now;
            bytes_of[i % WINDOW] = bytes;
            wait = vr_rate_limit_reserve(limits, 1, bytes, now);
            g_assert_cmpint(wait, >=, 0);
            now += wait; /* transfer i goes at now */
            sent += bytes;
            for (int j = i; j >= 0 && j > i - WINDOW; j--) {
                sum += bytes_of[j % WINDOW];
                if ((double)sum > (double)burst +
                                      (double)rate * (double)(now - reserved_at[j % WINDOW]) / 1e6 +
                                      1.0)
                    g_error("%" G_GUINT64_FORMAT " bytes from transfer %d to %d exceed the "
                            "bucket (rate %" G_GUINT64_FORMAT ", burst %" G_GUINT64_FORMAT ")",
                            sum, j, i, rate, burst);
            }
            /* Sometimes the sender idles: a bucket must not save more than its burst. */
            if (g_rand_int_range(rand, 0, 10) == 0)
                now += g_rand_int_range(rand, 0, 2000000);
        }
        /* Busy most of the time, it got at least ~50 % of the rate (idle time included). */
        g_assert_cmpfloat((double)sent / ((double)(now - start) / 1e6), >=, 0.5 * (double)rate);
    }
}

static void
test_combined(void)
{
    g_autoptr(VrRateLimit) host = vr_rate_limit_new(10 * MB, 0);
    g_autoptr(VrRateLimit) rel_a = vr_rate_limit_new(2 * MB, 0);
    g_autoptr(VrRateLimit) rel_b = vr_rate_limit_new(0, 0);
    VrRateLimit *a[] = { host, rel_a };
    VrRateLimit *b[] = { host, rel_b, NULL };

    /* The relationship's own limit is the tighter: 1 MiB at 2 MiB/s is half a second. */
    g_assert_cmpint(vr_rate_limit_reserve(a, 2, MB, 0), ==, 500000);
    /* An unlimited relationship still pays the host: now 2 MiB in host debt = 0.2 s. */
    g_assert_cmpint(vr_rate_limit_reserve(b, 3, MB, 0), ==, 200000);
    /* Unlimited alone: never a wait. */
    g_assert_cmpint(vr_rate_limit_reserve(&b[1], 1, 100 * MB, 0), ==, 0);
}

static void
test_set_rate(void)
{
    g_autoptr(VrRateLimit) limit = vr_rate_limit_new(MB, 0);
    VrRateLimit *limits[] = { limit };

    g_assert_cmpint(vr_rate_limit_reserve(limits, 1, MB, 0), ==, 1000000);
    /* Twice the rate: the debt left after 0.5 s (0.5 MiB) is paid in 0.25 s. */
    vr_rate_limit_set_rate(limit, 2 * MB, 500000);
    g_assert_cmpuint(vr_rate_limit_get_rate(limit), ==, 2 * MB);
    g_assert_cmpint(vr_rate_limit_reserve(limits, 1, 0, 500000), ==, 250000);
    /* Unlimited forgives the debt. */
    vr_rate_limit_set_rate(limit, 0, 500000);
    g_assert_cmpint(vr_rate_limit_reserve(limits, 1, 10 * MB, 500000), ==, 0);
}

static void
test_parse_rate(void)
{
    static const struct {
        const char *text;
        uint64_t rate;
        bool ok;
    } cases[] = {
        { "1500", 1500, true },   { "512K", 512 * 1024, true },
        { "10M", 10 * MB, true }, { "1g", 1024ull * MB, true },
        { "0", 0, true },         { "unlimited", 0, true },
        { " 2M ", 2 * MB, true }, { "", 0, false },
        { "fast", 0, false },     { "10MB", 0, false },
        { "-1", 0, false },       { "99999999999999999999G", 0, false },
    };

    for (guint i = 0; i < G_N_ELEMENTS(cases); i++) {
        g_autoptr(GError) error = NULL;
        uint64_t rate = 42;
        bool ok = vr_rate_parse(cases[i].text, &rate, &error);

        g_assert_cmpint(ok, ==, cases[i].ok);
        if (ok) {
            g_assert_no_error(error);
            g_assert_cmpuint(rate, ==, cases[i].rate);
        } else {
            g_assert_error(error, VR_RATE_LIMIT_ERROR, VR_RATE_LIMIT_ERROR_PARSE);
            g_assert_cmpuint(rate, ==, 42); /* outputs untouched on failure */
        }
    }
}

static uint64_t
rate_at(VrRateSchedule *schedule, int day_of_month, int hour, int minute)
{
    /* November 2026: the 23rd is a Monday. */
    g_autoptr(GTimeZone) utc = g_time_zone_new_utc();
    g_autoptr(GDateTime) when = g_date_time_new(utc, 2026, 11, day_of_month, hour, minute, 0);

    return vr_rate_schedule_rate_at(schedule, when);
}

static void
test_schedule(void)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(VrRateSchedule) s =
        vr_rate_schedule_parse("Mon-Fri 08:00-18:00 10M,  Sat-Sun 10:00-12:00 1M, "
                               "* 22:00-06:00 unlimited",
                               5 * MB, &error);

    g_assert_no_error(error);
    g_assert_cmpuint(rate_at(s, 25, 9, 0), ==, 10 * MB); /* Wednesday, working hours */
    g_assert_cmpuint(rate_at(s, 25, 17, 59), ==, 10 * MB);
    g_assert_cmpuint(rate_at(s, 25, 18, 0), ==, 5 * MB); /* the end is exclusive */
    g_assert_cmpuint(rate_at(s, 28, 11, 0), ==, 1 * MB); /* Saturday */
    g_assert_cmpuint(rate_at(s, 28, 9, 0), ==, 5 * MB);  /* Saturday, outside */
    g_assert_cmpuint(rate_at(s, 24, 23, 0), ==, 0);      /* Tuesday night */
    g_assert_cmpuint(rate_at(s, 25, 5, 59), ==, 0);      /* Wednesday morning, from Tuesday */
    g_assert_cmpuint(rate_at(s, 23, 3, 0), ==, 0);       /* Monday morning, from Sunday */
    g_assert_cmpuint(rate_at(s, 23, 6, 0), ==, 5 * MB);

    {
        g_autoptr(VrRateSchedule) wrap =
            vr_rate_schedule_parse("Sat-Mon 00:00-24:00 1K", 0, &error);

        g_assert_no_error(error);
        g_assert_cmpuint(rate_at(wrap, 29, 12, 0), ==, 1024);  /* Sunday */
        g_assert_cmpuint(rate_at(wrap, 23, 23, 59), ==, 1024); /* Monday */
        g_assert_cmpuint(rate_at(wrap, 24, 0, 0), ==, 0);      /* Tuesday */
    }
    {
        g_autoptr(VrRateSchedule) empty = vr_rate_schedule_parse("", 7, &error);

        g_assert_no_error(error);
        g_assert_cmpuint(rate_at(empty, 25, 9, 0), ==, 7);
    }
}

static void
test_schedule_errors(void)
{
    static const struct {
        const char *text;
        const char *names;
    } cases[] = {
        { "Mon 25:00-26:00 1M", "hours '25:00-26:00'" },
        { "Funday 08:00-09:00 1M", "days 'Funday'" },
        { "Mon 08:00-08:00 1M", "hours '08:00-08:00'" },
        { "Mon 08:00 1M", "hours '08:00'" },
        { "Mon 8:0-9:00 1M", "hours '8:0-9:00'" },
        { "Mon 08:00-09:00 fast", "rate 'fast'" },
        { "Mon-Tue-Wed 08:00-09:00 1M", "days 'Mon-Tue-Wed'" },
        { "Mon 08:00-09:00", "is not 'DAYS HH:MM-HH:MM RATE'" },
        { "Mon 08:00-09:00 1M,", "is not 'DAYS HH:MM-HH:MM RATE'" },
    };

    for (guint i = 0; i < G_N_ELEMENTS(cases); i++) {
        g_autoptr(GError) error = NULL;
        g_autoptr(VrRateSchedule) s = vr_rate_schedule_parse(cases[i].text, 0, &error);

        g_assert_null(s);
        g_assert_error(error, VR_RATE_LIMIT_ERROR, VR_RATE_LIMIT_ERROR_PARSE);
        if (strstr(error->message, cases[i].names) == NULL)
            g_error("'%s': '%s' does not name %s", cases[i].text, error->message, cases[i].names);
    }
}

int
main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/rate-limit/model", test_model);
    g_test_add_func("/rate-limit/combined", test_combined);
    g_test_add_func("/rate-limit/set-rate", test_set_rate);
    g_test_add_func("/rate-limit/parse-rate", test_parse_rate);
    g_test_add_func("/rate-limit/schedule", test_schedule);
    g_test_add_func("/rate-limit/schedule-errors", test_schedule_errors);
    return g_test_run();
}
