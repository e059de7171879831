/*
 * The `buzzer` device kind, in C: an on/off output (a piezo buzzer, or anything a transistor
 * switches), driven `on`/`off`/`toggle` by `sitectl set` and site logic, off at start, on
 * fault and at stop. It is the C example of a sited plugin (README, "Writing a plugin") and
 * the test suite builds it with the system's C compiler and drives it through a real sited.
 *
 * Config: {"pin": <GPIO>, "active-low": <bool, default false>}.
 *
 * Built against an older minor version of the ABI (-DSITED_PLUGIN_ABI_MINOR=0) it is the
 * test of sited loading a plugin whose descriptor is shorter than its own.
 */
#include <sited_plugin.h>

#include <stdlib.h>

#include "flatjson.h"

struct buzzer {
	const sited_host *host;
	uint32_t pin;
	int active_low;
	int on;
};

struct config {
	int have_pin;
	uint32_t pin;
	int active_low;
};

static void say(const sited_host *host, const char *msg)
{
	host->set_error(host->ctx, (sited_str){ msg, strlen(msg) });
}

static int config_field(const char *key, const struct flat_value *v, void *arg, char *err,
			size_t errcap)
{
	struct config *c = arg;

	if (strcmp(key, "pin") == 0 && v->kind == FLAT_NUMBER && v->number < 1000) {
		c->have_pin = 1;
		c->pin = (uint32_t)v->number;
		return 1;
	}
	if (strcmp(key, "active-low") == 0 && v->kind == FLAT_BOOL) {
		c->active_low = v->boolean;
		return 1;
	}
	snprintf(err, errcap, "buzzer: unknown or mistyped field `%s` (it takes pin and active-low)",
		 key);
	return 0;
}

static int32_t parse(const sited_host *host, sited_str json, struct config *c)
{
	char err[200];

	memset(c, 0, sizeof *c);
	if (!flat_object(json.ptr, json.len, err, sizeof err, config_field, c)) {
		say(host, err);
		return SITED_STATUS_ERROR;
	}
	if (!c->have_pin) {
		say(host, "buzzer: missing field `pin`");
		return SITED_STATUS_ERROR;
	}
	return SITED_STATUS_OK;
}

static uint32_t level(const struct buzzer *b, int on)
{
	return (on != b->active_low) ? SITED_LEVEL_HIGH : SITED_LEVEL_LOW;
}

static int32_t drive(struct buzzer *b, int on)
{
	const char *state = on ? "{\"state\": \"on\"}" : "{\"state\": \"off\"}";

	if (b->host->write_pin(b->host->ctx, b->pin, level(b, on)) != SITED_HOST_OK) {
		say(b->host, "writing the buzzer's pin: the hardware failed (see the daemon log)");
		return SITED_STATUS_ERROR;
	}
	b->on = on;
	b->host->set_state(b->host->ctx, (sited_str){ state, strlen(state) });
	return SITED_STATUS_OK;
}

static int32_t buzzer_validate(const sited_host *host, sited_str config_json)
{
	struct config c;

	return parse(host, config_json, &c);
}

static int32_t buzzer_create(const sited_host *host, sited_str config_json, void **out)
{
	struct config c;
	struct buzzer *b;

	if (parse(host, config_json, &c) != SITED_STATUS_OK)
		return SITED_STATUS_ERROR;
	b = calloc(1, sizeof *b);
	if (!b) {
		say(host, "buzzer: out of memory");
		return SITED_STATUS_ERROR;
	}
	b->host = host;
	b->pin = c.pin;
	b->active_low = c.active_low;
	if (host->claim_output(host->ctx, b->pin, level(b, 0)) != SITED_HOST_OK) {
		say(host, "claiming the buzzer's pin: the hardware failed (see the daemon log)");
		free(b);
		return SITED_STATUS_ERROR;
	}
	if (drive(b, 0) != SITED_STATUS_OK) {
		free(b);
		return SITED_STATUS_ERROR;
	}
	host->log(host->ctx, SITED_LOG_DEBUG, SITED_STR("buzzer ready (C plugin)"));
	*out = b;
	return SITED_STATUS_OK;
}

static void buzzer_destroy(void *instance)
{
	free(instance);
}

static int32_t buzzer_on_edge(void *instance, uint32_t pin, uint32_t lvl, uint64_t at_us)
{
	(void)instance, (void)pin, (void)lvl, (void)at_us;
	return SITED_STATUS_OK;
}

static int32_t buzzer_on_timer(void *instance, uint64_t id)
{
	(void)instance, (void)id;
	return SITED_STATUS_OK;
}

static int command_field(const char *key, const struct flat_value *v, void *arg, char *err,
			 size_t errcap)
{
	if (strcmp(key, "set") == 0 && v->kind == FLAT_STRING) {
		memcpy(arg, v->text, sizeof v->text);
		return 1;
	}
	snprintf(err, errcap, "buzzer: unknown command field `%s`", key);
	return 0;
}

static int32_t buzzer_command(void *instance, sited_str command_json)
{
	struct buzzer *b = instance;
	char value[sizeof ((struct flat_value *)0)->text] = "", err[200];

	if (!flat_object(command_json.ptr, command_json.len, err, sizeof err, command_field, value)) {
		say(b->host, err);
		return SITED_STATUS_ERROR;
	}
	if (strcmp(value, "on") == 0)
		return drive(b, 1);
	if (strcmp(value, "off") == 0)
		return drive(b, 0);
	if (strcmp(value, "toggle") == 0)
		return drive(b, !b->on);
	say(b->host, "a buzzer is on, off or toggle");
	return SITED_STATUS_ERROR;
}

static int32_t buzzer_simulate(void *instance, sited_str request_json, uint32_t *pin,
			       uint32_t *lvl)
{
	struct buzzer *b = instance;

	(void)request_json, (void)pin, (void)lvl;
	say(b->host, "a buzzer is an output; drive it with `sitectl set`");
	return SITED_STATUS_ERROR;
}

static int32_t buzzer_safe_state(void *instance)
{
	return drive(instance, 0);
}

static const sited_plugin_descriptor descriptor = {
	.size = sizeof(sited_plugin_descriptor),
	.abi_version = SITED_PLUGIN_ABI_VERSION,
	.kind = SITED_STR("buzzer"),
	.version = SITED_STR("1.0.0"),
	.role = SITED_ROLE_OUTPUT,
	.validate = buzzer_validate,
	.create = buzzer_create,
	.destroy = buzzer_destroy,
	.on_edge = buzzer_on_edge,
	.on_timer = buzzer_on_timer,
	.command = buzzer_command,
	.simulate = buzzer_simulate,
	.safe_state = buzzer_safe_state,
#if SITED_PLUGIN_ABI_MINOR >= 1
	.abi_minor = SITED_PLUGIN_ABI_MINOR,
	.flags = 0,
	.description = SITED_STR("buzzer, an on/off output (C)"),
#endif
};

SITED_PLUGIN_EXPORT const sited_plugin_descriptor *sited_plugin_query(const uint32_t *host_versions,
								       size_t n)
{
	for (size_t i = 0; host_versions && i < n; i++)
		if (host_versions[i] == SITED_PLUGIN_ABI_VERSION)
			return &descriptor;
	return NULL;
}
