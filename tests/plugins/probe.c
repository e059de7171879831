/*
 * The `probe` device kind: a C plugin that misbehaves on purpose at sited's plugin boundary,
 * one case per config, so the test suite can check that sited answers each with an error code
 * or a refusal and carries on (tests/e2e/plugin_abi.rs). Not for real use.
 *
 * Config: {"pin": <GPIO>, "case": "<case>", "marker": "<path>"}. Cases:
 *   bad-pointers       every string callback with (NULL, len > 0), read_pin with a NULL out
 *   other-thread       callbacks from a thread of the plugin's own
 *   fail-with-instance create fails but still hands out an instance; destroy writes `marker`
 * Each case publishes the codes the host answered in the device's state.
 * Built with -DPROBE_NULL_VALIDATE its descriptor has no validate function.
 */
#include <sited_plugin.h>

#include <pthread.h>
#include <stdlib.h>

#include "flatjson.h"

struct probe {
	const sited_host *host;
	uint32_t pin;
	char marker[128];
};

struct config {
	uint32_t pin;
	char which[64];
	char marker[128];
};

static int config_field(const char *key, const struct flat_value *v, void *arg, char *err,
			size_t errcap)
{
	struct config *c = arg;

	if (strcmp(key, "pin") == 0 && v->kind == FLAT_NUMBER) {
		c->pin = (uint32_t)v->number;
		return 1;
	}
	if (strcmp(key, "case") == 0 && v->kind == FLAT_STRING) {
		snprintf(c->which, sizeof c->which, "%.63s", v->text);
		return 1;
	}
	if (strcmp(key, "marker") == 0 && v->kind == FLAT_STRING) {
		memcpy(c->marker, v->text, sizeof c->marker);
		return 1;
	}
	snprintf(err, errcap, "probe: unknown field `%s`", key);
	return 0;
}

static int32_t parse(const sited_host *host, sited_str json, struct config *c)
{
	char err[200];

	memset(c, 0, sizeof *c);
	if (!flat_object(json.ptr, json.len, err, sizeof err, config_field, c)) {
		host->set_error(host->ctx, (sited_str){ err, strlen(err) });
		return SITED_STATUS_ERROR;
	}
	return SITED_STATUS_OK;
}

static void publish(const sited_host *host, const char *json)
{
	host->set_state(host->ctx, (sited_str){ json, strlen(json) });
}

#ifndef PROBE_NULL_VALIDATE
static int32_t probe_validate(const sited_host *host, sited_str config_json)
{
	struct config c;

	return parse(host, config_json, &c);
}
#endif

struct thread_result {
	const sited_host *host;
	uint32_t pin;
	int32_t set_state, write_pin, log;
};

static void *from_another_thread(void *arg)
{
	struct thread_result *t = arg;

	t->set_state = t->host->set_state(t->host->ctx, SITED_STR("{\"state\": \"hijacked\"}"));
	t->write_pin = t->host->write_pin(t->host->ctx, t->pin, SITED_LEVEL_HIGH);
	t->log = t->host->log(t->host->ctx, SITED_LOG_ERROR, SITED_STR("from another thread"));
	return NULL;
}

static int32_t probe_create(const sited_host *host, sited_str config_json, void **out)
{
	struct config c;
	struct probe *p;
	char state[300];

	if (parse(host, config_json, &c) != SITED_STATUS_OK)
		return SITED_STATUS_ERROR;
	p = calloc(1, sizeof *p);
	if (!p)
		return SITED_STATUS_ERROR;
	p->host = host;
	p->pin = c.pin;
	memcpy(p->marker, c.marker, sizeof p->marker);
	if (host->claim_output(host->ctx, p->pin, SITED_LEVEL_LOW) != SITED_HOST_OK) {
		free(p);
		return SITED_STATUS_ERROR;
	}
	if (strcmp(c.which, "bad-pointers") == 0) {
		int32_t log = host->log(host->ctx, SITED_LOG_INFO, (sited_str){ NULL, 5 });
		int32_t emit = host->emit(host->ctx, (sited_str){ NULL, 3 });
		int32_t set_state = host->set_state(host->ctx, (sited_str){ NULL, 7 });
		int32_t set_error = host->set_error(host->ctx, (sited_str){ NULL, 2 });
		int32_t read_pin = host->read_pin(host->ctx, p->pin, NULL);
		int32_t bad_ctx = host->write_pin((void *)&c, p->pin, SITED_LEVEL_HIGH);

		snprintf(state, sizeof state,
			 "{\"state\": \"survived\", \"log\": %d, \"emit\": %d, \"set_state\": %d, "
			 "\"set_error\": %d, \"read_pin\": %d, \"bad_ctx\": %d}",
			 log, emit, set_state, set_error, read_pin, bad_ctx);
		publish(host, state);
	} else if (strcmp(c.which, "other-thread") == 0) {
		struct thread_result t = { host, p->pin, -1, -1, -1 };
		pthread_t thread;

		if (pthread_create(&thread, NULL, from_another_thread, &t) != 0 ||
		    pthread_join(thread, NULL) != 0) {
			free(p);
			return SITED_STATUS_ERROR;
		}
		snprintf(state, sizeof state,
			 "{\"state\": \"survived\", \"set_state\": %d, \"write_pin\": %d, \"log\": %d}",
			 t.set_state, t.write_pin, t.log);
		publish(host, state);
	} else if (strcmp(c.which, "fail-with-instance") == 0) {
		*out = p;
		host->set_error(host->ctx, SITED_STR("probe: failing create on purpose, instance set"));
		return SITED_STATUS_ERROR;
	} else {
		host->set_error(host->ctx, SITED_STR("probe: unknown case"));
		free(p);
		return SITED_STATUS_ERROR;
	}
	*out = p;
	return SITED_STATUS_OK;
}

static void probe_destroy(void *instance)
{
	struct probe *p = instance;

	if (p->marker[0]) {
		FILE *f = fopen(p->marker, "w");

		if (f) {
			fputs("destroyed\n", f);
			fclose(f);
		}
	}
	free(p);
}

static int32_t probe_on_edge(void *instance, uint32_t pin, uint32_t level, uint64_t at_us)
{
	(void)instance, (void)pin, (void)level, (void)at_us;
	return SITED_STATUS_OK;
}

static int32_t probe_on_timer(void *instance, uint64_t id)
{
	(void)instance, (void)id;
	return SITED_STATUS_OK;
}

static int32_t probe_command(void *instance, sited_str command_json)
{
	(void)instance, (void)command_json;
	return SITED_STATUS_ERROR;
}

static int32_t probe_simulate(void *instance, sited_str request_json, uint32_t *pin,
			      uint32_t *level)
{
	(void)instance, (void)request_json, (void)pin, (void)level;
	return SITED_STATUS_ERROR;
}

static int32_t probe_safe_state(void *instance)
{
	struct probe *p = instance;

	return p->host->write_pin(p->host->ctx, p->pin, SITED_LEVEL_LOW) == SITED_HOST_OK
		       ? SITED_STATUS_OK
		       : SITED_STATUS_ERROR;
}

static const sited_plugin_descriptor descriptor = {
	.size = sizeof(sited_plugin_descriptor),
	.abi_version = SITED_PLUGIN_ABI_VERSION,
	.kind = SITED_STR("probe"),
	.version = SITED_STR("0.0.1"),
	.role = SITED_ROLE_OUTPUT,
#ifdef PROBE_NULL_VALIDATE
	.validate = NULL,
#else
	.validate = probe_validate,
#endif
	.create = probe_create,
	.destroy = probe_destroy,
	.on_edge = probe_on_edge,
	.on_timer = probe_on_timer,
	.command = probe_command,
	.simulate = probe_simulate,
	.safe_state = probe_safe_state,
	.abi_minor = SITED_PLUGIN_ABI_MINOR,
	.description = SITED_STR("misbehaves at the plugin boundary, for tests"),
};

SITED_PLUGIN_EXPORT const sited_plugin_descriptor *sited_plugin_query(const uint32_t *host_versions,
								       size_t n)
{
	for (size_t i = 0; host_versions && i < n; i++)
		if (host_versions[i] == SITED_PLUGIN_ABI_VERSION)
			return &descriptor;
	return NULL;
}
