/* Unit tests for unit-file rendering and service-name checks. */
#include "guest/systemd.h"
#include "unit.h"

#include <stdlib.h>
#include <string.h>

static char *render(const char *json, int patch, const char **code)
{
        char msg[256];
        json_t *spec = json_loads(json, 0, NULL);
        char *text = sysd_render(spec, NULL, patch, code, msg, sizeof(msg));

        json_decref(spec);
        return text;
}

TEST(systemd_names)
{
        char msg[128];

        CHECK(sysd_check_name("web", msg, sizeof(msg)) == NULL);
        CHECK(sysd_check_name("web.service", msg, sizeof(msg)) == NULL);
        CHECK(!strcmp(sysd_check_name("", msg, sizeof(msg)), "SERVICE_NAME_EMPTY"));
        CHECK(!strcmp(sysd_check_name("a b", msg, sizeof(msg)), "SERVICE_NAME_INVALID_CHARS"));
        CHECK(!strcmp(sysd_check_name("../x", msg, sizeof(msg)), "SERVICE_NAME_INVALID_CHARS"));
        CHECK(!strcmp(sysd_check_name("systemd-journald", msg, sizeof(msg)), "SERVICE_NAME_INVALID_PREFIX"));
        CHECK(!strcmp(sysd_check_name("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", msg, sizeof(msg)),
                      "SERVICE_NAME_TOO_LONG"));
}

TEST(systemd_render_service)
{
        const char *code = NULL;
        char *u = render("{\"name\":\"web\",\"mode\":\"service\",\"exec\":[\"npm i\",\"node s.js $PORT 100%\"],"
                         "\"env\":{\"PORT\":\"3000\"},\"user\":\"app\",\"workdir\":\"/srv\",\"after\":[\"db\"],"
                         "\"restartPolicy\":{\"policy\":\"always\",\"restartSec\":2},\"timeoutSec\":30}",
                         0, &code);

        CHECK(u != NULL && code == NULL);
        CHECK(strstr(u, SYSD_MARKER));
        CHECK(strstr(u, "Type=simple\n"));
        CHECK(strstr(u, "ExecStartPre=/bin/sh -c \"npm i\"\n"));
        CHECK(strstr(u, "ExecStart=/bin/sh -c \"node s.js $$PORT 100%%\"\n"));
        CHECK(strstr(u, "Environment=\"PORT=3000\"\n"));
        CHECK(strstr(u, "User=app\n") && strstr(u, "WorkingDirectory=/srv\n"));
        CHECK(strstr(u, "After=db.service\n"));
        CHECK(strstr(u, "Restart=always\nRestartSec=2\n"));
        CHECK(strstr(u, "TimeoutSec=30\n"));
        CHECK(strstr(u, "WantedBy=multi-user.target\n"));
        free(u);
}

TEST(systemd_render_oneshot_and_injection)
{
        const char *code = NULL;
        char *u = render("{\"name\":\"x\",\"mode\":\"oneshot\",\"exec\":[\"echo \\\"hi\\\"\\nExecStart=/bin/evil\"]}", 0,
                         &code);

        CHECK(u != NULL);
        CHECK(strstr(u, "Type=oneshot\nRemainAfterExit=yes\n"));
        /* The newline stays inside the quoted value: no new directive. */
        CHECK(strstr(u, "\nExecStart=/bin/evil") == NULL);
        CHECK(strstr(u, "ExecStart=/bin/sh -c \"echo \\\"hi\\\"\\nExecStart=/bin/evil\"\n"));
        free(u);
}

TEST(systemd_render_errors)
{
        const char *code = NULL;

        CHECK(render("{\"name\":\"x\",\"mode\":\"service\",\"exec\":[]}", 0, &code) == NULL && !strcmp(code, "EXEC_EMPTY"));
        CHECK(render("{\"name\":\"x\",\"mode\":\"daemon\",\"exec\":[\"a\"]}", 0, &code) == NULL &&
              !strcmp(code, "INVALID_PARAMETERS"));
        CHECK(render("{\"name\":\"x\",\"mode\":\"service\",\"exec\":[\"a\"],\"user\":\"a\\nb\"}", 0, &code) == NULL);
        CHECK(render("{\"name\":\"x\",\"mode\":\"service\",\"exec\":[\"a\"],\"after\":[\"a b\"]}", 0, &code) == NULL);
        CHECK(render("{\"name\":\"x\",\"mode\":\"service\",\"exec\":[\"a\"],\"env\":{\"A B\":\"1\"}}", 0, &code) == NULL);
}

TEST(systemd_render_delete_after_success)
{
        const char *code = NULL;
        char *u = render("{\"name\":\"tidy.service\",\"mode\":\"oneshot\",\"exec\":[\"true\"],\"user\":\"app\","
                         "\"deleteAfterSuccess\":true,\"remainAfterExit\":true}",
                         0, &code);

        CHECK(u != NULL && code == NULL);
        /* It must leave the active state for ExecStopPost= to run. */
        CHECK(strstr(u, "RemainAfterExit=no\n"));
        /* Root ('+') whatever User= is; only after a clean success. */
        CHECK(strstr(u, "ExecStopPost=+/bin/sh -c \"test $$SERVICE_RESULT/$$EXIT_CODE/$$EXIT_STATUS = "
                        "success/exited/0 || exit 0; systemctl disable --no-reload -q tidy.service; rm -rf "
                        "/etc/systemd/system/tidy.service /etc/systemd/system/tidy.service.d; "
                        "systemctl --no-block daemon-reload\"\n"));
        free(u);

        /* Not a oneshot, or false: nothing is added. */
        u = render("{\"name\":\"web\",\"mode\":\"service\",\"exec\":[\"x\"],\"deleteAfterSuccess\":true}", 0, &code);
        CHECK(u != NULL && strstr(u, "ExecStopPost") == NULL);
        free(u);
        u = render("{\"name\":\"o\",\"mode\":\"oneshot\",\"exec\":[\"x\"],\"deleteAfterSuccess\":false}", 0, &code);
        CHECK(u != NULL && strstr(u, "ExecStopPost") == NULL && strstr(u, "RemainAfterExit=yes\n"));
        free(u);
        /* A patch never deletes the unit it patches. */
        u = render("{\"mode\":\"oneshot\",\"deleteAfterSuccess\":true}", 1, &code);
        CHECK(u != NULL && strstr(u, "ExecStopPost") == NULL);
        free(u);
        CHECK(render("{\"name\":\"o\",\"mode\":\"oneshot\",\"exec\":[\"x\"],\"deleteAfterSuccess\":1}", 0, &code) == NULL &&
              !strcmp(code, "INVALID_PARAMETERS"));
}
