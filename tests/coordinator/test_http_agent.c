/*
 * test_http_agent.c - the HAProxy agent check's reply: the documented
 * weight formula, its clamps, and the states that override it.
 */
#include <math.h>
#include <string.h>

#include "http_internal.h"
#include "st_test.h"

static st_http_load_t load(uint32_t running, uint32_t queued, uint32_t slots, double util)
{
    st_http_load_t l;
    memset(&l, 0, sizeof(l));
    l.running = running;
    l.queued = queued;
    l.n_slots = slots;
    l.stage_util = util;
    l.healthy = 1;
    return l;
}

static int reply_is(const st_http_load_t *l, const char *want)
{
    char buf[64];
    int n = st_http_agent_reply(l, buf, sizeof(buf));
    return n == (int)strlen(want) && !strcmp(buf, want);
}

ST_TEST(idle_is_full_weight)
{
    st_http_load_t l = load(0, 0, 8, 0.0);
    ST_CHECK(st_http_agent_weight(&l) == 100);
    ST_CHECK(reply_is(&l, "up ready 100%\n"));
}

ST_TEST(slots_and_queue_lower_the_weight)
{
    st_http_load_t l = load(2, 0, 8, 0.0);
    ST_CHECK(st_http_agent_weight(&l) == 75);            /* 1 - 2/8 */
    l = load(4, 2, 8, 0.1);
    ST_CHECK(st_http_agent_weight(&l) == 25);            /* 1 - 6/8; util lower */
    l = load(8, 0, 8, 0.0);
    ST_CHECK(st_http_agent_weight(&l) == 1);             /* full: never 0 while up */
    l = load(8, 100, 8, 0.0);
    ST_CHECK(st_http_agent_weight(&l) == 1);             /* queue beyond the slots: capped */
    ST_CHECK(reply_is(&l, "up ready 1%\n"));
}

ST_TEST(stage_utilisation_lowers_the_weight)
{
    st_http_load_t l = load(1, 0, 16, 0.6);
    ST_CHECK(st_http_agent_weight(&l) == 40);            /* the busier of the two */
    l = load(0, 0, 16, 3.0);                             /* > 1 (clock skew): capped */
    ST_CHECK(st_http_agent_weight(&l) == 1);
    l = load(0, 0, 16, -0.5);                            /* negative (counter reset) */
    ST_CHECK(st_http_agent_weight(&l) == 100);
    l = load(0, 0, 16, NAN);                             /* broken sample: assume full */
    ST_CHECK(st_http_agent_weight(&l) == 1);
}

ST_TEST(no_slots_reported)
{
    st_http_load_t l = load(0, 0, 0, 0.0);
    ST_CHECK(st_http_agent_weight(&l) == 100);
    l = load(0, 1, 0, 0.0);
    ST_CHECK(st_http_agent_weight(&l) == 1);
}

ST_TEST(drain_and_down_override_the_weight)
{
    st_http_load_t l = load(0, 0, 8, 0.0);
    l.draining = 1;
    ST_CHECK(reply_is(&l, "drain 0%\n"));
    l.healthy = 0;                                       /* draining wins: finish streams */
    ST_CHECK(reply_is(&l, "drain 0%\n"));
    l.draining = 0;
    ST_CHECK(reply_is(&l, "down\n"));
}

ST_TEST(short_buffer_is_safe)
{
    st_http_load_t l = load(0, 0, 8, 0.0);
    char buf[4];
    int n = st_http_agent_reply(&l, buf, sizeof(buf));
    ST_CHECK(n == (int)strlen("up ready 100%\n") && buf[3] == 0);
}

int main(void) { return st_test_main(); }
