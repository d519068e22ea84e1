/*
 * vr-qmp-json.h: json-c ownership helpers and small typed accessors
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include <glib.h>
#include <json-c/json.h>

G_BEGIN_DECLS

G_DEFINE_AUTOPTR_CLEANUP_FUNC(json_object, json_object_put)

/* json_object_put() with the GDestroyNotify signature (json-c's returns int). */
void vr_json_free(gpointer obj);

/* The member @key of @obj when it is a string, else NULL. (transfer none) */
const char *vr_json_get_string(json_object *obj, const char *key);

/* The member @key of @obj when it is an object, else NULL. (transfer none) */
json_object *vr_json_get_object(json_object *obj, const char *key);

/* The member @key of @obj when it is an array, else NULL. (transfer none) */
json_object *vr_json_get_array(json_object *obj, const char *key);

/* The member @key of @obj when it is a boolean, else @fallback. */
bool vr_json_get_bool(json_object *obj, const char *key, bool fallback);

/*
 * The member @key of @obj when it is an integer that fits @out: true and
 * *out set; else false and *out untouched.
 */
bool vr_json_get_int64(json_object *obj, const char *key, int64_t *out);
bool vr_json_get_uint64(json_object *obj, const char *key, uint64_t *out);

/* Compact one-line JSON text of @obj, newly allocated. (transfer full) */
char *vr_json_to_string(json_object *obj);

G_END_DECLS
