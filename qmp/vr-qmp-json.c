/*
 * vr-qmp-json.c: json-c ownership helpers and small typed accessors
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include "vr-qmp-json.h"

void
vr_json_free(gpointer obj)
{
    json_object_put(obj);
}

static json_object *
vr_json_get_typed(json_object *obj, const char *key, json_type type)
{
    json_object *member = NULL;

    if (obj == NULL || !json_object_is_type(obj, json_type_object))
        return NULL;
    if (!json_object_object_get_ex(obj, key, &member))
        return NULL;
    if (!json_object_is_type(member, type))
        return NULL;
    return member;
}

const char *
vr_json_get_string(json_object *obj, const char *key)
{
    json_object *member = vr_json_get_typed(obj, key, json_type_string);

    return member != NULL ? json_object_get_string(member) : NULL;
}

json_object *
vr_json_get_object(json_object *obj, const char *key)
{
    return vr_json_get_typed(obj, key, json_type_object);
}

json_object *
vr_json_get_array(json_object *obj, const char *key)
{
    return vr_json_get_typed(obj, key, json_type_array);
}

bool
vr_json_get_bool(json_object *obj, const char *key, bool fallback)
{
    json_object *member = vr_json_get_typed(obj, key, json_type_boolean);

    return member != NULL ? json_object_get_boolean(member) : fallback;
}

bool
vr_json_get_int64(json_object *obj, const char *key, int64_t *out)
{
    json_object *member = vr_json_get_typed(obj, key, json_type_int);

    if (member == NULL)
        return false;
    *out = json_object_get_int64(member);
    return true;
}

bool
vr_json_get_uint64(json_object *obj, const char *key, uint64_t *out)
{
    json_object *member = vr_json_get_typed(obj, key, json_type_int);

    if (member == NULL)
        return false;
    /* json-c keeps non-negative integers above INT64_MAX as uint64. */
    if (json_object_get_int64(member) < 0)
        return false;
    *out = json_object_get_uint64(member);
    return true;
}

char *
vr_json_to_string(json_object *obj)
{
    return g_strdup(json_object_to_json_string_ext(obj, JSON_C_TO_STRING_PLAIN |
                                                            JSON_C_TO_STRING_NOSLASHESCAPE));
}
