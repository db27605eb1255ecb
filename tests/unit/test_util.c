/* Unit tests for util (SHA-256, base64, UTF-8, ids) and request parsing
 * helpers of the HTTP/API layer. */
#include "api/api.h"
#include "http/http.h"
#include "hv/jail.h"
#include "unit.h"
#include "lib/metrics.h"
#include "lib/util.h"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

TEST(sha256_known_vectors)
{
        char h[65];

        sha256_hex("", 0, h);
        CHECK(!strcmp(h, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"));
        sha256_hex("abc", 3, h);
        CHECK(!strcmp(h, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"));
        /* 56 bytes: the padding spills into a second block. */
        sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", 56, h);
        CHECK(!strcmp(h, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"));
}

TEST(base64_roundtrip_all_lengths)
{
        uint8_t in[300];

        for (size_t i = 0; i < sizeof(in); i++)
                in[i] = (uint8_t)(i * 37 + 11);
        for (size_t len = 0; len <= sizeof(in); len += 1) {
                char *enc = base64_encode(in, len);
                uint8_t *dec = NULL;
                size_t dlen = 99;

                CHECK(enc && strlen(enc) == 4 * ((len + 2) / 3));
                CHECK(base64_decode(enc, strlen(enc), &dec, &dlen) == 0);
                CHECK(dlen == len && memcmp(dec, in, len) == 0);
                free(enc);
                free(dec);
        }
}

TEST(base64_rejects_garbage)
{
        uint8_t *dec = NULL;
        size_t n;

        CHECK(base64_decode("ab$d", 4, &dec, &n) == -EINVAL);
        CHECK(base64_decode("a===", 4, &dec, &n) == -EINVAL);
        CHECK(base64_decode("YQ==YQ==", 8, &dec, &n) == -EINVAL);
        CHECK(base64_decode("YQ==", 4, &dec, &n) == 0 && n == 1 && dec[0] == 'a');
        free(dec);
}

TEST(utf8_validation_and_sanitize)
{
        size_t n;
        char *s;

        CHECK(utf8_valid("hello", 5));
        CHECK(utf8_valid("h\xc3\xa9llo \xf0\x9f\x98\x80", 11));
        CHECK(!utf8_valid("a\0b", 3));
        CHECK(!utf8_valid("\xff", 1));
        CHECK(!utf8_valid("\xc3", 1));            /* truncated */
        CHECK(!utf8_valid("\xed\xa0\x80", 3));    /* surrogate */
        CHECK(!utf8_valid("\xc0\xaf", 2));        /* overlong */
        s = utf8_sanitize("a\xff" "b", 3, &n);
        CHECK(s && n == 5 && !strcmp(s, "a\xef\xbf\xbd" "b"));
        free(s);
}

TEST(random_ids_are_lowercase_alnum)
{
        char id[21], other[21];

        CHECK(random_id(id, 20) == 0 && strlen(id) == 20);
        for (int i = 0; i < 20; i++)
                CHECK((id[i] >= 'a' && id[i] <= 'z') || (id[i] >= '0' && id[i] <= '9'));
        CHECK(random_id(other, 20) == 0 && strcmp(id, other) != 0);
}

TEST(http_decode_segments)
{
        char *s;

        s = http_decode("%2Froot%2Fa%20b.txt", 19, 0);
        CHECK(s && !strcmp(s, "/root/a b.txt"));
        free(s);
        s = http_decode("a+b", 3, 1);
        CHECK(s && !strcmp(s, "a b"));
        free(s);
        s = http_decode("a+b", 3, 0);
        CHECK(s && !strcmp(s, "a+b"));
        free(s);
        CHECK(http_decode("%2", 2, 0) == NULL);
        CHECK(http_decode("%zz", 3, 0) == NULL);
        CHECK(http_decode("%+1", 3, 0) == NULL);
        CHECK(http_decode("a%00b", 5, 0) == NULL); /* an encoded NUL would cut the path short */
}

TEST(vm_id_parsing)
{
        char id[21];

        CHECK(api_parse_vm_id("abcdefghij0123456789", id) == 0 && !strcmp(id, "abcdefghij0123456789"));
        CHECK(api_parse_vm_id("abc12", id) == 0 && !strcmp(id, "abc12000000000000000"));
        CHECK(api_parse_vm_id("ABCDEFGHIJ0123456789", id) == -EINVAL);
        CHECK(api_parse_vm_id("abcdefghij01234567890", id) == -EINVAL);
        CHECK(api_parse_vm_id("", id) == -EINVAL);
        CHECK(api_parse_vm_id("..", id) == -EINVAL);
}

TEST(mkdir_p_and_rm_rf)
{
        char base[] = "/tmp/sprout-unit-XXXXXX", path[256];

        CHECK(mkdtemp(base) != NULL);
        snprintf(path, sizeof(path), "%s/a/b/c", base);
        CHECK(mkdir_p(path, 0700) == 0);
        snprintf(path, sizeof(path), "%s/a/b/c/f", base);
        CHECK(write_file_atomic(path, "x", 1, 0600) == 0);
        CHECK(rm_rf(base) == 0);
        CHECK(rm_rf(base) == 0); /* missing is fine */
}

TEST(copy_sparse_keeps_data_and_holes)
{
        char dir[] = "/tmp/sprout-copy-XXXXXX", a[256], b[256];
        char *back = NULL;
        size_t len = 0;
        int fd;

        CHECK(mkdtemp(dir) != NULL);
        snprintf(a, sizeof(a), "%s/a", dir);
        snprintf(b, sizeof(b), "%s/b", dir);
        fd = open(a, O_WRONLY | O_CREAT, 0600);
        CHECK(fd >= 0);
        CHECK(pwrite(fd, "head", 4, 0) == 4);
        CHECK(pwrite(fd, "middle", 6, 5 << 20) == 6);
        CHECK(ftruncate(fd, 16 << 20) == 0); /* a hole at the end too */
        close(fd);
        CHECK(copy_sparse(a, b) == 0);
        CHECK(read_file(b, 16 << 20, &back, &len) == 0);
        CHECK(len == 16 << 20);
        CHECK(!memcmp(back, "head", 4) && !memcmp(back + (5 << 20), "middle", 6) && back[100] == 0);
        free(back);
        CHECK(copy_sparse("/nonexistent/x", b) == -ENOENT);
        rm_rf(dir);
}

/* Between two file systems (a VM's RAM on tmpfs to the data dir) the copy
 * is read and written: data kept, a 1 MiB run of zeros left as a hole. */
TEST(copy_sparse_across_file_systems_skips_zeros)
{
        char src[] = "/dev/shm/sprout-copy-XXXXXX", dir[] = "/tmp/sprout-copy-XXXXXX", b[256];
        char *zeros = calloc(1, 3 << 20), *back = NULL;
        size_t len = 0;
        struct stat st;
        int fd;

        CHECK(zeros && mkdtemp(dir) != NULL);
        snprintf(b, sizeof(b), "%s/b", dir);
        fd = mkstemp(src);
        CHECK(fd >= 0);
        /* allocated zeros from 0 to 3 MiB, data at 0 and at 2 MiB + 1 */
        CHECK(pwrite(fd, zeros, 3 << 20, 0) == 3 << 20);
        CHECK(pwrite(fd, "head", 4, 0) == 4);
        CHECK(pwrite(fd, "tail", 4, (2 << 20) + 1) == 4);
        CHECK(ftruncate(fd, 4 << 20) == 0);
        close(fd);
        CHECK(copy_sparse(src, b) == 0);
        CHECK(read_file(b, 4 << 20, &back, &len) == 0);
        CHECK(len == 4 << 20);
        CHECK(!memcmp(back, "head", 4) && !memcmp(back + (2 << 20) + 1, "tail", 4));
        CHECK(!memcmp(back + 4, zeros, (2 << 20) - 3) && !memcmp(back + (2 << 20) + 5, zeros, (2 << 20) - 5));
        CHECK(stat(b, &st) == 0);
        CHECK(st.st_blocks * 512 < (2 << 20)); /* the zero runs were not written */
        free(back);
        free(zeros);
        unlink(src);
        rm_rf(dir);
}

TEST(metrics_histogram_buckets_and_text)
{
        struct histo h = {0};
        struct strbuf b = {0};

        histo_add(&h, 500);      /* 0.5 ms */
        histo_add(&h, 30000);    /* 30 ms */
        histo_add(&h, 90000000); /* 90 s: only +Inf */
        histo_format(&b, "x_seconds", "op=\"a\"", &h);
        CHECK(!b.oom && b.s);
        CHECK(strstr(b.s, "x_seconds_bucket{op=\"a\",le=\"0.001\"} 1\n"));
        CHECK(strstr(b.s, "x_seconds_bucket{op=\"a\",le=\"0.025\"} 1\n"));
        CHECK(strstr(b.s, "x_seconds_bucket{op=\"a\",le=\"0.05\"} 2\n"));
        CHECK(strstr(b.s, "x_seconds_bucket{op=\"a\",le=\"60\"} 2\n"));
        CHECK(strstr(b.s, "x_seconds_bucket{op=\"a\",le=\"+Inf\"} 3\n"));
        CHECK(strstr(b.s, "x_seconds_sum{op=\"a\"} 90.030500\n"));
        CHECK(strstr(b.s, "x_seconds_count{op=\"a\"} 3\n"));
        free(b.s);
        b = (struct strbuf){0};
        histo_format(&b, "y", "", &h);
        CHECK(strstr(b.s, "y_bucket{le=\"+Inf\"} 3\n") && strstr(b.s, "\ny_count 3\n"));
        free(b.s);
}

TEST(jail_kill_uid_kills_that_uid_only)
{
        unsigned uid = 2099999000u + (unsigned)(getpid() % 1000);
        pid_t child, other;
        int st;

        if (geteuid() != 0) {
                CHECK(jail_kill_uid(uid) == 0); /* nothing runs as it */
                return;
        }
        child = fork();
        if (child == 0) {
                if (setgid(uid) < 0 || setuid(uid) < 0)
                        _exit(3);
                pause();
                _exit(0);
        }
        other = fork();
        if (other == 0) {
                pause();
                _exit(0);
        }
        CHECK(child > 0 && other > 0);
        usleep(200000);
        CHECK(jail_kill_uid(uid) == 1);
        CHECK(waitpid(child, &st, 0) == child && WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
        CHECK(waitpid(other, &st, WNOHANG) == 0); /* a process of another uid lives on */
        kill(other, SIGKILL);
        waitpid(other, &st, 0);
}
