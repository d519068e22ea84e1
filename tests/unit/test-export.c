/*
 * test-export.c: the initial copy on external media, both ends, without peers
 *
 * The writer (vr-export.h): a directory made 0700, streams and a manifest that reads back as
 * written, nothing else in the directory, another export refused, the leftovers of an
 * unfinished one replaced and foreign files kept, an export not committed removed. The
 * manifest reader: a table of manifests each broken in one way, every one refused naming
 * what is wrong. The importer (vr-replica-import.h): a stream from a GInputStream verified
 * against its key, size and digest, refused when any byte is flipped or it is cut short;
 * a directory imported through a recording sink: the domain XML, then every stream begun,
 * fed and committed in order; a tampered second disk or an unauthorized primary: the sink
 * is never called (nothing applied, nothing published); the same import a chunk per main
 * loop iteration, and one freed while it applies (aborted, never committed).
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gio/gio.h>
#include <glib/gstdio.h>
#include <json-c/json.h>

#include "vr-authz.h"
#include "vr-export.h"
#include "vr-qmp-json.h"
#include "vr-replica-import.h"
#include "vr-wire.h"

#define KIB 1024

/* ---- fixture ------------------------------------------------------------------------ */

typedef struct {
    char *tmp;     /* removed at the end, with everything beneath */
    char *dir;     /* the export directory: <tmp>/media/export (not made) */
    char *storage; /* a storage root for the authorization */
} Fixture;

static void
fixture_setup(Fixture *fx, gconstpointer data)
{
    g_autoptr(GError) error = NULL;

    fx->tmp = g_dir_make_tmp("vr-export-XXXXXX", &error);
    g_assert_no_error(error);
    fx->dir = g_build_filename(fx->tmp, "media", "export", NULL);
    fx->storage = g_build_filename(fx->tmp, "storage", NULL);
    g_assert_cmpint(g_mkdir(fx->storage, 0700), ==, 0);
}

static void
remove_tree(const char *path)
{
    g_autoptr(GDir) dir = g_dir_open(path, 0, NULL);
    const char *name;

    while (dir != NULL && (name = g_dir_read_name(dir)) != NULL) {
        g_autofree char *child = g_build_filename(path, name, NULL);

        if (g_file_test(child, G_FILE_TEST_IS_DIR) && !g_file_test(child, G_FILE_TEST_IS_SYMLINK))
            remove_tree(child);
        else
            g_unlink(child);
    }
    g_rmdir(path);
}

static void
fixture_teardown(Fixture *fx, gconstpointer data)
{
    remove_tree(fx->tmp);
    g_free(fx->storage);
    g_free(fx->dir);
    g_free(fx->tmp);
}

static int
compare_names(gconstpointer a, gconstpointer b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The names in @dir, sorted and joined by spaces. (transfer full) */
static char *
list_dir(const char *path)
{
    g_autoptr(GDir) dir = g_dir_open(path, 0, NULL);
    g_autoptr(GPtrArray) names = g_ptr_array_new_with_free_func(g_free);
    const char *name;

    while (dir != NULL && (name = g_dir_read_name(dir)) != NULL)
        g_ptr_array_add(names, g_strdup(name));
    g_ptr_array_sort(names, compare_names);
    g_ptr_array_add(names, NULL);
    return g_strjoinv(" ", (char **)names->pdata);
}

/* ---- streams ------------------------------------------------------------------------ */

/* A FULL cycle stream of disk @disk: 64 KiB of random data, then 64 KiB of zeroes. */
static GByteArray *
make_stream(const char *relationship, const char *disk, uint64_t cycle)
{
    VrWireIdentity id = {
        .kind = VR_WIRE_KIND_CYCLE,
        .epoch = 1,
        .base_cycle = 0,
        .target_cycle = cycle,
        .virtual_size = 1024 * KIB,
        .granularity = 64 * KIB,
        .flags = VR_WIRE_FLAG_FULL,
    };
    g_autoptr(GError) error = NULL;
    g_autoptr(VrWireEncoder) encoder = NULL;
    g_autofree uint8_t *data = g_malloc(64 * KIB);
    GByteArray *out = g_byte_array_new();

    g_strlcpy(id.relationship, relationship, sizeof(id.relationship));
    g_strlcpy(id.disk, disk, sizeof(id.disk));
    for (guint i = 0; i < 64 * KIB; i++)
        data[i] = (uint8_t)g_test_rand_int();
    encoder = vr_wire_encoder_new(&id, &error);
    g_assert_no_error(error);
    g_assert_true(vr_wire_encoder_begin(encoder, out, &error));
    g_assert_true(vr_wire_encoder_add_data(encoder, 0, data, 64 * KIB, out, &error));
    g_assert_true(vr_wire_encoder_add_zero(encoder, 64 * KIB, 64 * KIB, out, &error));
    g_assert_true(vr_wire_encoder_end(encoder, out, &error));
    g_assert_no_error(error);
    return out;
}

static bool
on_end(const VrWireRecord *record, gpointer user_data, GError **error)
{
    if (record->type == VR_WIRE_RECORD_END)
        memcpy(user_data, record->data, VR_WIRE_DIGEST_SIZE);
    return true;
}

/* The stream digest of @stream (its END record's). */
static void
stream_digest(GByteArray *stream, uint8_t digest[VR_WIRE_DIGEST_SIZE])
{
    g_autoptr(VrWireDecoder) decoder = vr_wire_decoder_new();
    g_autoptr(GError) error = NULL;

    g_assert_true(vr_wire_decoder_feed(decoder, stream->data, stream->len, on_end, digest, &error));
    g_assert_true(vr_wire_decoder_finish(decoder, &error));
}

static void
write_file(const char *path, const void *data, gsize len)
{
    g_autoptr(GError) error = NULL;

    g_assert_true(g_file_set_contents(path, data, (gssize)len, &error));
    g_assert_no_error(error);
}

static const char *const two_disks[] = { "vda", "vdb", NULL };

/* A complete export of @disks into fx->dir by the writer, primary "primary1". */
static void
make_export(Fixture *fx, const char *const *disks)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(VrExport) export = vr_export_new(fx->dir, "r1", disks, &error);

    g_assert_no_error(error);
    for (guint i = 0; disks[i] != NULL; i++) {
        g_autoptr(GByteArray) stream = make_stream("r1", disks[i], 1);
        g_autofree char *path = vr_export_stream_path(export, i);
        uint8_t digest[VR_WIRE_DIGEST_SIZE];

        stream_digest(stream, digest);
        write_file(path, stream->data, stream->len);
        vr_export_set_disk(export, i, stream->len, digest);
    }
    g_assert_true(vr_export_commit(export,
                                   &(VrExportInfo){
                                       .primary = "primary1",
                                       .domain_name = "vm1",
                                       .domain_uuid = "c7a5fdbd-edaf-9455-926a-d65c16db1809",
                                       .domain_xml = "<domain type='kvm'><name>vm1</name>"
                                                     "</domain>",
                                       .epoch = 1,
                                       .cycle = 1,
                                       .flags = VR_WIRE_FLAG_FULL,
                                   },
                                   &error));
    g_assert_no_error(error);
}

static VrExportManifest *
read_manifest(const char *dir, GError **error)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    VrExportManifest *manifest;

    g_assert_cmpint(fd, >=, 0);
    manifest = vr_export_manifest_read(fd, dir, error);
    close(fd);
    return manifest;
}

/* ---- the writer --------------------------------------------------------------------- */

static void
test_write_roundtrip(Fixture *fx, gconstpointer data)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(VrExportManifest) manifest = NULL;
    g_autofree char *names = NULL;
    struct stat st;

    make_export(fx, two_disks);
    g_assert_cmpint(stat(fx->dir, &st), ==, 0);
    g_assert_cmpint(st.st_mode & 0777, ==, 0700);
    names = list_dir(fx->dir);
    g_assert_cmpstr(names, ==, "manifest.json vda.stream vdb.stream");

    manifest = read_manifest(fx->dir, &error);
    g_assert_no_error(error);
    g_assert_cmpstr(manifest->relationship, ==, "r1");
    g_assert_cmpuint(manifest->epoch, ==, 1);
    g_assert_cmpuint(manifest->cycle, ==, 1);
    g_assert_cmpuint(manifest->flags, ==, VR_WIRE_FLAG_FULL);
    g_assert_cmpstr(manifest->primary, ==, "primary1");
    g_assert_cmpstr(manifest->domain_name, ==, "vm1");
    g_assert_nonnull(strstr(manifest->domain_xml, "<name>vm1</name>"));
    g_assert_cmpuint(manifest->disks->len, ==, 2);
    for (guint i = 0; i < 2; i++) {
        const VrExportDisk *disk = &g_array_index(manifest->disks, VrExportDisk, i);
        g_autofree char *file = g_strconcat(two_disks[i], ".stream", NULL);
        g_autofree char *path = g_build_filename(fx->dir, file, NULL);
        g_autofree char *contents = NULL;
        gsize len = 0;
        uint8_t digest[VR_WIRE_DIGEST_SIZE];
        GByteArray stream;

        g_assert_cmpstr(disk->target, ==, two_disks[i]);
        g_assert_cmpstr(disk->file, ==, file);
        g_assert_true(g_file_get_contents(path, &contents, &len, NULL));
        g_assert_cmpuint(disk->size, ==, len);
        stream.data = (guint8 *)contents;
        stream.len = (guint)len;
        stream_digest(&stream, digest);
        g_assert_cmpmem(disk->digest, sizeof(digest), digest, sizeof(digest));
    }

    /* The directory holds an export now: another one is refused, nothing touched. */
    {
        g_autoptr(VrExport) again = vr_export_new(fx->dir, "r2", two_disks, &error);
        g_autofree char *after = list_dir(fx->dir);

        g_assert_null(again);
        g_assert_error(error, VR_EXPORT_ERROR, VR_EXPORT_ERROR_EXISTS);
        g_assert_cmpstr(after, ==, names);
    }
}

static void
test_write_leftovers(Fixture *fx, gconstpointer data)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(VrExport) export = NULL;
    g_autofree char *names = NULL;
    static const char *const left[] = { "vda.stream", "vda.stream.part", "manifest.json.part",
                                        "notes.txt" };

    g_assert_cmpint(g_mkdir_with_parents(fx->dir, 0700), ==, 0);
    for (guint i = 0; i < G_N_ELEMENTS(left); i++) {
        g_autofree char *path = g_build_filename(fx->dir, left[i], NULL);

        write_file(path, "x", 1);
    }
    export = vr_export_new(fx->dir, "r1", two_disks, &error);
    g_assert_no_error(error);
    names = list_dir(fx->dir);
    g_assert_cmpstr(names, ==, "notes.txt");

    /* Not committed: the streams written so far go with it. */
    {
        g_autofree char *path = vr_export_stream_path(export, 0);

        write_file(path, "y", 1);
    }
    g_clear_pointer(&export, vr_export_free);
    g_free(names);
    names = list_dir(fx->dir);
    g_assert_cmpstr(names, ==, "notes.txt");
}

static void
test_write_relative(Fixture *fx, gconstpointer data)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(VrExport) export = vr_export_new("media/export", "r1", two_disks, &error);

    g_assert_null(export);
    g_assert_error(error, VR_EXPORT_ERROR, VR_EXPORT_ERROR_INVALID);
}

/* ---- the manifest reader ------------------------------------------------------------ */

typedef struct {
    const char *path;
    const char *from;                    /* replaced once in a good manifest (compact JSON) ... */
    const char *to;                      /* ... by this */
    const char *says;                    /* in the message */
    void (*edit)(json_object *manifest); /* or this done to it (from and to NULL) */
} BadManifest;

static json_object *
first_disk(json_object *manifest)
{
    return json_object_array_get_idx(vr_json_get_array(manifest, "disks"), 0);
}

static void
edit_size_zero(json_object *manifest)
{
    json_object_object_add(first_disk(manifest), "size", json_object_new_int(0));
}

static void
edit_digest_short(json_object *manifest)
{
    g_autofree char *digest = g_strdup(vr_json_get_string(first_disk(manifest), "digest"));

    digest[63] = '\0';
    json_object_object_add(first_disk(manifest), "digest", json_object_new_string(digest));
}

static void
edit_digest_upper(json_object *manifest)
{
    g_autofree char *digest = g_ascii_strup(vr_json_get_string(first_disk(manifest), "digest"), -1);

    json_object_object_add(first_disk(manifest), "digest", json_object_new_string(digest));
}

static void
edit_no_disks(json_object *manifest)
{
    json_object_object_add(manifest, "disks", json_object_new_array());
}

static void
edit_no_xml(json_object *manifest)
{
    json_object_object_del(vr_json_get_object(manifest, "domain"), "xml");
}

static const BadManifest bad_manifests[] = {
    { "/export/manifest/unknown-member", "\"epoch\":", "\"colour\":1,\"epoch\":", "colour" },
    { "/export/manifest/format", "virt-replica-export", "tar", "format" },
    { "/export/manifest/version", "\"version\":1", "\"version\":2", "version 2" },
    { "/export/manifest/relationship-case", "\"relationship\":\"r1\"", "\"relationship\":\"R1\"",
      "relationship" },
    { "/export/manifest/relationship-path", "\"relationship\":\"r1\"", "\"relationship\":\"..\"",
      "relationship" },
    { "/export/manifest/relationship-long", "\"relationship\":\"r1\"",
      "\"relationship\":\"r1234567890123456\"", "relationship" },
    { "/export/manifest/epoch-zero", "\"epoch\":1", "\"epoch\":0", "epoch" },
    { "/export/manifest/epoch-string", "\"epoch\":1", "\"epoch\":\"1\"", "epoch" },
    { "/export/manifest/base", "\"base\":0", "\"base\":1", "base" },
    { "/export/manifest/resync", "\"flags\":1", "\"flags\":2", "flags" },
    { "/export/manifest/primary-space", "\"primary\":\"primary1\"", "\"primary\":\"primary 1\"",
      "primary" },
    { "/export/manifest/no-primary", "\"primary\":\"primary1\",", "", "primary" },
    { "/export/manifest/file-path", "\"file\":\"vda.stream\"", "\"file\":\"../vda.stream\"",
      "file of disk 'vda'" },
    { "/export/manifest/file-other", "\"file\":\"vda.stream\"", "\"file\":\"vdb.stream\"",
      "file of disk 'vda'" },
    { "/export/manifest/disk-name", "\"target\":\"vda\"", "\"target\":\"vd/a\"", "disk" },
    { "/export/manifest/digest-short", NULL, NULL, "not 64 hex digits", edit_digest_short },
    { "/export/manifest/digest-upper", NULL, NULL, "not 64 hex digits", edit_digest_upper },
    { "/export/manifest/digest-long", "\"digest\":\"", "\"digest\":\"0", "digest" },
    { "/export/manifest/size-zero", NULL, NULL, "'size'", edit_size_zero },
    { "/export/manifest/twice", "\"target\":\"vdb\",\"file\":\"vdb.stream\"",
      "\"target\":\"vda\",\"file\":\"vda.stream\"", "twice" },
    { "/export/manifest/no-disks", NULL, NULL, "'disks'", edit_no_disks },
    { "/export/manifest/xml-missing", NULL, NULL, "'xml'", edit_no_xml },
    { "/export/manifest/not-json", "{", "[", "JSON" },
    { "/export/manifest/trailing", NULL, NULL, "JSON" }, /* see below */
};

/* The good manifest of fx->dir as compact JSON. (transfer full) */
static char *
compact_manifest(Fixture *fx)
{
    g_autofree char *path = g_build_filename(fx->dir, VR_EXPORT_MANIFEST, NULL);
    g_autoptr(json_object) obj = json_object_from_file(path);

    g_assert_nonnull(obj);
    return g_strdup(json_object_to_json_string_ext(obj, JSON_C_TO_STRING_PLAIN |
                                                            JSON_C_TO_STRING_NOSLASHESCAPE));
}

static void
test_manifest_bad(Fixture *fx, gconstpointer data)
{
    const BadManifest *bad = data;
    g_autoptr(GError) error = NULL;
    g_autoptr(VrExportManifest) manifest = NULL;
    g_autofree char *good = NULL;
    g_autofree char *text = NULL;
    g_autofree char *path = NULL;
    const char *at;

    make_export(fx, two_disks);
    good = compact_manifest(fx);
    if (bad->edit != NULL) {
        g_autoptr(json_object) obj = json_tokener_parse(good);

        bad->edit(obj);
        text = g_strdup(json_object_to_json_string_ext(obj, JSON_C_TO_STRING_PLAIN));
    } else if (bad->from != NULL) {
        at = strstr(good, bad->from);
        g_assert_nonnull(at);
        text = g_strdup_printf("%.*s%s%s", (int)(at - good), good, bad->to, at + strlen(bad->from));
    } else {
        text = g_strconcat(good, " {}", NULL); /* trailing: a second document */
    }
    path = g_build_filename(fx->dir, VR_EXPORT_MANIFEST, NULL);
    write_file(path, text, strlen(text));
    manifest = read_manifest(fx->dir, &error);
    g_assert_null(manifest);
    g_assert_error(error, VR_EXPORT_ERROR, VR_EXPORT_ERROR_INVALID);
    if (g_test_verbose())
        g_printerr("%s\n", error->message);
    g_assert_nonnull(strstr(error->message, bad->says));
}

static void
test_manifest_symlink(Fixture *fx, gconstpointer data)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(VrExportManifest) manifest = NULL;
    g_autofree char *path = NULL;
    g_autofree char *moved = NULL;

    make_export(fx, two_disks);
    path = g_build_filename(fx->dir, VR_EXPORT_MANIFEST, NULL);
    moved = g_build_filename(fx->tmp, "elsewhere.json", NULL);
    g_assert_cmpint(g_rename(path, moved), ==, 0);
    g_assert_cmpint(symlink(moved, path), ==, 0);
    manifest = read_manifest(fx->dir, &error);
    g_assert_null(manifest);
    g_assert_nonnull(error);
    g_clear_error(&error);
    /* And no manifest at all: not an export. */
    g_unlink(path);
    manifest = read_manifest(fx->dir, &error);
    g_assert_null(manifest);
    g_assert_error(error, VR_EXPORT_ERROR, VR_EXPORT_ERROR_INVALID);
}

/* ---- one stream --------------------------------------------------------------------- */

static bool
verify(GByteArray *stream, const VrReceiverKey *key, uint64_t size, const uint8_t *digest,
       GError **error)
{
    g_autoptr(GInputStream) in =
        g_memory_input_stream_new_from_data(stream->data, stream->len, NULL);
    VrReceiverPeer peer = { "primary1", "/nonexistent", "default" };

    return vr_replica_import_stream(NULL, NULL, key, &peer, in, size, digest, NULL, NULL, error);
}

static void
test_stream_verify(Fixture *fx, gconstpointer data)
{
    g_autoptr(GByteArray) stream = make_stream("r1", "vda", 1);
    VrReceiverKey key = { "r1", "vda", 1, 0, 1 };
    VrReceiverKey other = key;
    uint8_t digest[VR_WIRE_DIGEST_SIZE];
    uint8_t wrong[VR_WIRE_DIGEST_SIZE];
    guint step = MAX(stream->len / 97, 1);

    stream_digest(stream, digest);
    g_assert_true(verify(stream, &key, stream->len, digest, NULL));
    g_assert_true(verify(stream, &key, 0, NULL, NULL));

    memcpy(wrong, digest, sizeof(wrong));
    wrong[7] ^= 1;
    g_assert_false(verify(stream, &key, stream->len, wrong, NULL));
    g_assert_false(verify(stream, &key, stream->len + 1, digest, NULL));
    other.target_cycle = 2;
    g_assert_false(verify(stream, &other, stream->len, digest, NULL));
    other = key;
    g_strlcpy(other.disk, "vdb", sizeof(other.disk));
    g_assert_false(verify(stream, &other, stream->len, digest, NULL));

    /* Any byte flipped, anywhere. */
    for (guint off = 0; off < stream->len; off += step) {
        g_autoptr(GError) error = NULL;

        stream->data[off] ^= 0x20;
        g_assert_false(verify(stream, &key, stream->len, digest, &error));
        g_assert_nonnull(error);
        stream->data[off] ^= 0x20;
    }
    /* Cut short anywhere (the size given as the manifest would, and not given). */
    for (guint len = 0; len < stream->len; len += step) {
        guint saved = stream->len;

        stream->len = len;
        g_assert_false(verify(stream, &key, 0, digest, NULL));
        stream->len = saved;
    }
}

/* ---- a directory through a recording sink ----------------------------------------- */

typedef struct {
    GString *log; /* "begin(vda,...) domain(r1) commit ..." */
    guint records;
    const char *refuse; /* begin() of this disk fails as the sink's CONFLICT */
} Recorder;

static gpointer
rec_begin(const VrReceiverKey *key, const VrReceiverPeer *peer, gpointer user_data, GError **error)
{
    Recorder *rec = user_data;

    if (g_strcmp0(key->disk, rec->refuse) == 0) {
        g_set_error(error, VR_RECEIVER_ERROR, VR_RECEIVER_ERROR_CONFLICT, "disk '%s' has points",
                    key->disk);
        return NULL;
    }
    g_string_append_printf(rec->log, "begin(%s,%s,%s) ", key->disk, peer->name, peer->group);
    return rec;
}

static bool
rec_record(gpointer handle, const VrWireRecord *record, GError **error)
{
    Recorder *rec = handle;

    rec->records++;
    return true;
}

static bool
rec_commit(gpointer handle, GError **error)
{
    Recorder *rec = handle;

    g_string_append(rec->log, "commit ");
    return true;
}

static void
rec_abort(gpointer handle)
{
    Recorder *rec = handle;

    g_string_append(rec->log, "abort ");
}

static bool
rec_domain(const char *relationship, const VrReceiverPeer *peer, const char *xml, gsize len,
           gpointer user_data, GError **error)
{
    Recorder *rec = user_data;

    g_string_append_printf(rec->log, "domain(%s) ", relationship);
    return true;
}

static const VrReceiverSink recorder_sink = {
    .begin = rec_begin,
    .record = rec_record,
    .commit = rec_commit,
    .abort = rec_abort,
    .domain = rec_domain,
};

static void
test_dir_import(Fixture *fx, gconstpointer data)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(VrAuthz) authz = vr_authz_new_allow_any(fx->storage, "dc1", &error);
    g_autoptr(GString) log = g_string_new(NULL);
    g_auto(VrReplicaImportResult) result = { 0 };
    Recorder rec = { log, 0 };

    g_assert_no_error(error);
    make_export(fx, two_disks);
    g_assert_true(vr_replica_import_dir(&recorder_sink, &rec, authz, fx->dir, &result, &error));
    g_assert_no_error(error);
    g_assert_cmpstr(log->str, ==,
                    "begin(vda,primary1,dc1) begin(vdb,primary1,dc1) domain(r1) commit commit ");
    /* BEGIN, DATA, ZERO, END per disk. */
    g_assert_cmpuint(rec.records, ==, 8);
    g_assert_cmpuint(result.bytes, ==, 2 * 128 * KIB);
    g_assert_cmpstr(result.manifest->relationship, ==, "r1");
}

static void
test_dir_tampered(Fixture *fx, gconstpointer data)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(VrAuthz) authz = vr_authz_new_allow_any(fx->storage, "dc1", &error);
    g_autoptr(GString) log = g_string_new(NULL);
    g_auto(VrReplicaImportResult) result = { 0 };
    g_autofree char *path = NULL;
    g_autofree char *contents = NULL;
    Recorder rec = { log, 0 };
    gsize len = 0;

    make_export(fx, two_disks);
    /* The second disk's stream, one byte flipped in its data: the first must not be applied. */
    path = g_build_filename(fx->dir, "vdb.stream", NULL);
    g_assert_true(g_file_get_contents(path, &contents, &len, NULL));
    contents[len / 2] ^= 0x01;
    write_file(path, contents, len);
    g_assert_false(vr_replica_import_dir(&recorder_sink, &rec, authz, fx->dir, &result, &error));
    g_assert_error(error, VR_WIRE_ERROR, VR_WIRE_ERROR_CORRUPT);
    g_assert_nonnull(strstr(error->message, "vdb.stream"));
    g_assert_cmpstr(log->str, ==, "");
    g_clear_error(&error);

    /* Cut short: the size is not the manifest's. */
    write_file(path, contents, len - 100);
    g_assert_false(vr_replica_import_dir(&recorder_sink, &rec, authz, fx->dir, &result, &error));
    g_assert_error(error, VR_EXPORT_ERROR, VR_EXPORT_ERROR_INVALID);
    g_assert_cmpstr(log->str, ==, "");
    g_clear_error(&error);

    /* Replaced by a symlink to a good copy elsewhere: not followed. */
    {
        g_autofree char *elsewhere = g_build_filename(fx->tmp, "vdb.stream", NULL);

        contents[len / 2] ^= 0x01;
        write_file(elsewhere, contents, len);
        g_unlink(path);
        g_assert_cmpint(symlink(elsewhere, path), ==, 0);
    }
    g_assert_false(vr_replica_import_dir(&recorder_sink, &rec, authz, fx->dir, &result, &error));
    g_assert_error(error, VR_EXPORT_ERROR, VR_EXPORT_ERROR_INVALID);
    g_assert_cmpstr(log->str, ==, "");
}

static void
on_done(VrReplicaImport *import, gpointer user_data)
{
    guint *calls = user_data;

    (*calls)++;
}

/* The same import a chunk per main loop iteration; then one freed while it applies. */
static void
test_dir_async(Fixture *fx, gconstpointer data)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(VrAuthz) authz = vr_authz_new_allow_any(fx->storage, "dc1", &error);
    g_autoptr(GString) log = g_string_new(NULL);
    g_autoptr(GMainContext) context = g_main_context_new();
    g_auto(VrReplicaImportResult) result = { 0 };
    VrReplicaImport *import;
    Recorder rec = { log, 0 };
    guint done = 0;
    guint iterations = 0;

    make_export(fx, two_disks);
    g_main_context_push_thread_default(context);
    import = vr_replica_import_start(&recorder_sink, &rec, authz, fx->dir, on_done, &done, &error);
    g_assert_no_error(error);
    g_assert_cmpstr(vr_replica_import_get_manifest(import)->relationship, ==, "r1");
    /* Nothing happens before the loop runs. */
    g_assert_cmpstr(log->str, ==, "");
    while (done == 0 && iterations++ < 1000)
        g_main_context_iteration(context, TRUE);
    g_assert_cmpuint(done, ==, 1);
    /* Several steps: verify vda, vdb (begin, chunk, end each), the domain, apply each. */
    g_assert_cmpuint(iterations, >=, 10);
    g_assert_true(vr_replica_import_finish(import, &result, &error));
    g_assert_cmpstr(log->str, ==,
                    "begin(vda,primary1,dc1) begin(vdb,primary1,dc1) domain(r1) commit commit ");
    vr_replica_import_free(import);

    /* Freed in the middle of applying vda: aborted, not committed, no callback. */
    g_string_truncate(log, 0);
    done = 0;
    import = vr_replica_import_start(&recorder_sink, &rec, authz, fx->dir, on_done, &done, &error);
    g_assert_no_error(error);
    while (!g_str_has_suffix(log->str, "domain(r1) ") && iterations++ < 2000)
        g_main_context_iteration(context, TRUE);
    vr_replica_import_free(import);
    g_assert_cmpstr(log->str, ==,
                    "begin(vda,primary1,dc1) begin(vdb,primary1,dc1) domain(r1) abort abort ");
    while (g_main_context_iteration(context, FALSE))
        ;
    g_assert_cmpuint(done, ==, 0);
    g_main_context_pop_thread_default(context);
}

/* The sink refuses the second disk (it has points): the first is aborted, nothing written. */
static void
test_dir_conflict(Fixture *fx, gconstpointer data)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(VrAuthz) authz = vr_authz_new_allow_any(fx->storage, "dc1", &error);
    g_autoptr(GString) log = g_string_new(NULL);
    g_auto(VrReplicaImportResult) result = { 0 };
    Recorder rec = { log, 0, "vdb" };

    make_export(fx, two_disks);
    g_assert_false(vr_replica_import_dir(&recorder_sink, &rec, authz, fx->dir, &result, &error));
    g_assert_error(error, VR_RECEIVER_ERROR, VR_RECEIVER_ERROR_CONFLICT);
    g_assert_nonnull(strstr(error->message, "vdb.stream"));
    g_assert_cmpstr(log->str, ==, "begin(vda,primary1,dc1) abort ");
    g_assert_cmpuint(rec.records, ==, 0);
}

static void
test_dir_forbidden(Fixture *fx, gconstpointer data)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(VrAuthz) authz = vr_authz_new_table();
    g_autoptr(GString) log = g_string_new(NULL);
    g_auto(VrReplicaImportResult) result = { 0 };
    Recorder rec = { log, 0 };

    g_assert_true(vr_authz_add(authz, "*.dc1.example", fx->storage, "dc1", &error));
    make_export(fx, two_disks);
    g_assert_false(vr_replica_import_dir(&recorder_sink, &rec, authz, fx->dir, &result, &error));
    g_assert_error(error, VR_AUTHZ_ERROR, VR_AUTHZ_ERROR_FORBIDDEN);
    g_assert_nonnull(strstr(error->message, "primary1"));
    g_assert_cmpstr(log->str, ==, "");
}

int
main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);

#define ADD(path, func, data) g_test_add(path, Fixture, data, fixture_setup, func, fixture_teardown)
    ADD("/export/write/roundtrip", test_write_roundtrip, NULL);
    ADD("/export/write/leftovers", test_write_leftovers, NULL);
    ADD("/export/write/relative", test_write_relative, NULL);
    for (guint i = 0; i < G_N_ELEMENTS(bad_manifests); i++)
        ADD(bad_manifests[i].path, test_manifest_bad, &bad_manifests[i]);
    ADD("/export/manifest/symlink", test_manifest_symlink, NULL);
    ADD("/export/import/stream", test_stream_verify, NULL);
    ADD("/export/import/dir", test_dir_import, NULL);
    ADD("/export/import/tampered", test_dir_tampered, NULL);
    ADD("/export/import/forbidden", test_dir_forbidden, NULL);
    ADD("/export/import/conflict", test_dir_conflict, NULL);
    ADD("/export/import/async", test_dir_async, NULL);
#undef ADD
    return g_test_run();
}
