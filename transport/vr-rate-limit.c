/*
 * vr-rate-limit.c: bandwidth limits of replication traffic
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include <stdlib.h>
#include <string.h>

#include "vr-rate-limit.h"

GQuark
vr_rate_limit_error_quark(void)
{
    return g_quark_from_static_string("vr-rate-limit-error-quark");
}

/* ---- token bucket ------------------------------------------------------------------ */

struct _VrRateLimit {
    GMutex lock;
    uint64_t rate;  /* bytes per second; 0: unlimited */
    uint64_t burst; /* the most tokens a bucket holds */
    double tokens;  /* may go negative: a debt paid back at the rate */
    int64_t last_us;
    bool started;
};

VrRateLimit *
vr_rate_limit_new(uint64_t rate, uint64_t burst)
{
    VrRateLimit *limit = g_new0(VrRateLimit, 1);

    g_mutex_init(&limit->lock);
    limit->rate = rate;
    limit->burst = burst;
    limit->tokens = (double)burst;
    return limit;
}

void
vr_rate_limit_free(VrRateLimit *limit)
{
    if (limit == NULL)
        return;
    g_mutex_clear(&limit->lock);
    g_free(limit);
}

/* Earn the tokens of the time since the last call. Called with the lock held. */
static void
vr_rate_limit_refill(VrRateLimit *limit, int64_t now_us)
{
    if (limit->started && now_us > limit->last_us && limit->rate != 0) {
        limit->tokens += (double)(now_us - limit->last_us) * (double)limit->rate / 1e6;
        if (limit->tokens > (double)limit->burst)
            limit->tokens = (double)limit->burst;
    }
    if (!limit->started || now_us > limit->last_us)
        limit->last_us = now_us;
    limit->started = true;
}

void
vr_rate_limit_set_rate(VrRateLimit *limit, uint64_t rate, int64_t now_us)
{
    g_mutex_lock(&limit->lock);
    vr_rate_limit_refill(limit, now_us);
    limit->rate = rate;
    /* Unlimited forgives any debt. */
    if (rate == 0 && limit->tokens < 0)
        limit->tokens = 0;
    g_mutex_unlock(&limit->lock);
}

uint64_t
vr_rate_limit_get_rate(VrRateLimit *limit)
{
    uint64_t rate;

    g_mutex_lock(&limit->lock);
    rate = limit->rate;
    g_mutex_unlock(&limit->lock);
    return rate;
}

int64_t
vr_rate_limit_reserve(VrRateLimit *const *limits, guint n_limits, uint64_t bytes, int64_t now_us)
{
    int64_t wait = 0;

    for (guint i = 0; i < n_limits; i++) {
        VrRateLimit *limit = limits[i];
        int64_t this_wait = 0;

        if (limit == NULL)
            continue;
        g_mutex_lock(&limit->lock);
        vr_rate_limit_refill(limit, now_us);
        if (limit->rate != 0) {
            limit->tokens -= (double)bytes;
            if (limit->tokens < 0) {
                /* Round up: waiting the returned time always pays the debt in full. */
                double us = -limit->tokens * 1e6 / (double)limit->rate;

                this_wait = (int64_t)us + ((double)(int64_t)us < us ? 1 : 0);
            }
        }
        g_mutex_unlock(&limit->lock);
        wait = MAX(wait, this_wait);
    }
    return wait;
}

bool
vr_rate_parse(const char *text, uint64_t *rate, GError **error)
{
    g_autofree char *s = g_strstrip(g_strdup(text));
    guint64 value = 0;
    guint64 unit = 1;
    char *end = NULL;

    if (g_ascii_strcasecmp(s, "unlimited") == 0) {
        *rate = 0;
        return true;
    }
    if (!g_ascii_isdigit(s[0]))
        goto fail;
    value = g_ascii_strtoull(s, &end, 10);
    if (g_ascii_strcasecmp(end, "K") == 0)
        unit = 1024;
    else if (g_ascii_strcasecmp(end, "M") == 0)
        unit = 1024 * 1024;
    else if (g_ascii_strcasecmp(end, "G") == 0)
        unit = 1024 * 1024 * 1024;
    else if (*end != '\0')
        goto fail;
    if (value > G_MAXUINT64 / unit)
        goto fail;
    *rate = value * unit;
    return true;

fail:
    g_set_error(error, VR_RATE_LIMIT_ERROR, VR_RATE_LIMIT_ERROR_PARSE,
                "rate '%s' is not a number of bytes per second with an optional K, M or G", text);
    return false;
}

/* ---- schedule --------------------------------------------------------------------- */

typedef struct {
    guint days; /* bit d: day d, 1 = Monday .. 7 = Sunday (GDateTime's numbering) */
    int start;  /* minutes after midnight */
    int end;    /* minutes after midnight; < start: over midnight; 1440 = 24:00 */
    uint64_t rate;
} VrRateWindow;

struct _VrRateSchedule {
    GArray *windows; /* VrRateWindow, in order */
    uint64_t default_rate;
};

static const char *const vr_day_names[] = { "mon", "tue", "wed", "thu", "fri", "sat", "sun" };

static int
vr_day_parse(const char *name)
{
    for (int i = 0; i < 7; i++) {
        if (g_ascii_strcasecmp(name, vr_day_names[i]) == 0)
            return i + 1;
    }
    return 0;
}

static bool
vr_days_parse(const char *text, guint *days)
{
    g_auto(GStrv) range = NULL;
    int first;
    int last;

    if (g_str_equal(text, "*")) {
        *days = 0xfe;
        return true;
    }
    range = g_strsplit(text, "-", 3);
    if (g_strv_length(range) > 2)
        return false;
    first = vr_day_parse(range[0]);
    last = range[1] != NULL ? vr_day_parse(range[1]) : first;
    if (first == 0 || last == 0)
        return false;
    *days = 0;
    /* Sat-Mon wraps over the week's end. */
    for (int d = first;; d = d % 7 + 1) {
        *days |= 1u << d;
        if (d == last)
            break;
    }
    return true;
}

static bool
vr_minute_parse(const char *text, int *minutes)
{
    guint64 h = 0;
    guint64 m = 0;
    g_auto(GStrv) hm = g_strsplit(text, ":", 3);

    if (g_strv_length(hm) != 2 || strlen(hm[0]) < 1 || strlen(hm[0]) > 2 || strlen(hm[1]) != 2 ||
        !g_ascii_string_to_unsigned(hm[0], 10, 0, 24, &h, NULL) ||
        !g_ascii_string_to_unsigned(hm[1], 10, 0, 59, &m, NULL) || (h == 24 && m != 0))
        return false;
    *minutes = (int)(h * 60 + m);
    return true;
}

VrRateSchedule *
vr_rate_schedule_parse(const char *text, uint64_t default_rate, GError **error)
{
    g_autoptr(VrRateSchedule) schedule = g_new0(VrRateSchedule, 1);
    g_auto(GStrv) parts = g_strsplit(text, ",", -1);

    schedule->windows = g_array_new(FALSE, FALSE, sizeof(VrRateWindow));
    schedule->default_rate = default_rate;
    for (guint i = 0; parts[i] != NULL; i++) {
        g_autofree char *part = g_strstrip(g_strdup(parts[i]));
        g_auto(GStrv) fields = NULL;
        g_auto(GStrv) times = NULL;
        VrRateWindow w = { 0 };
        g_autoptr(GError) local = NULL;

        if (part[0] == '\0' && parts[1] == NULL && i == 0)
            break; /* an empty schedule */
        fields = g_strsplit_set(part, " \t", -1);
        /* Collapse runs of blanks. */
        {
            guint n = 0;

            for (guint j = 0; fields[j] != NULL; j++) {
                if (fields[j][0] != '\0')
                    fields[n++] = fields[j];
                else
                    g_free(fields[j]);
            }
            fields[n] = NULL;
        }
        if (g_strv_length(fields) != 3) {
            g_set_error(error, VR_RATE_LIMIT_ERROR, VR_RATE_LIMIT_ERROR_PARSE,
                        "schedule window '%s' is not 'DAYS HH:MM-HH:MM RATE'", part);
            return NULL;
        }
        times = g_strsplit(fields[1], "-", 3);
        if (!vr_days_parse(fields[0], &w.days)) {
            g_set_error(error, VR_RATE_LIMIT_ERROR, VR_RATE_LIMIT_ERROR_PARSE,
                        "days '%s' of schedule window '%s' are not '*', 'Mon' or 'Mon-Fri'",
                        fields[0], part);
            return NULL;
        }
        if (g_strv_length(times) != 2 || !vr_minute_parse(times[0], &w.start) ||
            !vr_minute_parse(times[1], &w.end) || w.start == w.end || w.start == 1440) {
            g_set_error(error, VR_RATE_LIMIT_ERROR, VR_RATE_LIMIT_ERROR_PARSE,
                        "hours '%s' of schedule window '%s' are not 'HH:MM-HH:MM'", fields[1],
                        part);
            return NULL;
        }
        if (!vr_rate_parse(fields[2], &w.rate, &local)) {
            g_set_error(error, VR_RATE_LIMIT_ERROR, VR_RATE_LIMIT_ERROR_PARSE,
                        "schedule window '%s': %s", part, local->message);
            return NULL;
        }
        g_array_append_val(schedule->windows, w);
    }
    return g_steal_pointer(&schedule);
}

void
vr_rate_schedule_free(VrRateSchedule *schedule)
{
    if (schedule == NULL)
        return;
    g_clear_pointer(&schedule->windows, g_array_unref);
    g_free(schedule);
}

uint64_t
vr_rate_schedule_rate_at(VrRateSchedule *schedule, GDateTime *when)
{
    int day = g_date_time_get_day_of_week(when); /* 1 = Monday */
    int minute = g_date_time_get_hour(when) * 60 + g_date_time_get_minute(when);
    int yesterday = day == 1 ? 7 : day - 1;

    for (guint i = 0; i < schedule->windows->len; i++) {
        VrRateWindow *w = &g_array_index(schedule->windows, VrRateWindow, i);

        if (w->start < w->end) {
            if ((w->days & (1u << day)) && minute >= w->start && minute < w->end)
                return w->rate;
        } else {
            /* Over midnight: the evening of a listed day, or the morning after one. */
            if (((w->days & (1u << day)) && minute >= w->start) ||
                ((w->days & (1u << yesterday)) && minute < w->end))
                return w->rate;
        }
    }
    return schedule->default_rate;
}
