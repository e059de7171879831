/*
 * sited_plugin.h: the C ABI between sited and its device plugins, version 1.1.
 *
 * This is the same contract as plugins/api/src/abi.rs, written by hand for C plugins; the
 * test suite compiles this header against the Rust layout, field by field, and every entry
 * point and callback against its Rust signature. (C++ can use the types, but not SITED_STR,
 * a C compound literal.)
 *
 * A plugin is a shared library named libsited_plugin_<kind>.so in sited's plugin directory,
 * owned by root (or sited's user) and writable by nobody else. It exports one symbol,
 * sited_plugin_query(), which returns a static descriptor: the device kind, its role, and the
 * entry points sited calls. sited calls them on its one event-loop thread, one at a time; a
 * plugin must not call the host from any other thread (the host refuses such calls).
 *
 * Strings are (pointer, length) pairs, UTF-8, not NUL-terminated, borrowed for one call; the
 * pointer may be NULL only when the length is 0.
 *
 * Versions. abi_version is the major version; the host and the plugin must share it. Minor
 * versions only append fields to the descriptor, whose `size` says which it has: sited loads
 * a plugin built against an older minor and gives what its descriptor lacks a default.
 *   1.0  the descriptor ends at safe_state; log, set_error, emit and set_state return void.
 *   1.1  the descriptor gains abi_minor, flags and description, the host table abi_minor;
 *        those four callbacks return a SITED_HOST_* status (a 1.0 plugin ignores it; a 1.1
 *        plugin on a 1.0 host must not read it: see SITED_HOST_HAS_1_1).
 * Build against an older minor with -DSITED_PLUGIN_ABI_MINOR=0.
 *
 * What a plugin must not do: every entry point returns. A plugin that aborts, exits, raises
 * a fatal signal, longjmp()s out of an entry point or lets a C++ exception escape takes the
 * daemon down with it, before sited can put the outputs in their safe state. That is why
 * the hardware must be safe without sited (pull resistors on every output; see the README).
 */
#ifndef SITED_PLUGIN_H
#define SITED_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SITED_PLUGIN_ABI_VERSION 1u
#ifndef SITED_PLUGIN_ABI_MINOR
#define SITED_PLUGIN_ABI_MINOR 1u
#endif

/* Returned by the plugin's entry points. */
#define SITED_STATUS_OK 0      /* done */
#define SITED_STATUS_ERROR 1   /* refused or failed; the reason went through host->set_error */
#define SITED_STATUS_PANIC 2   /* broken: the host faults the device and calls only destroy */

/* Returned by the host's callbacks. */
#define SITED_HOST_OK 0
#define SITED_HOST_DENIED 1       /* not this device's pin, or not claimed for this use */
#define SITED_HOST_HW_ERROR 2     /* the hardware (or sited) failed; the host logged why */
#define SITED_HOST_BAD_ARGUMENT 3 /* out of range, a bad pointer, or the wrong thread */

#define SITED_LEVEL_LOW 0u
#define SITED_LEVEL_HIGH 1u

#define SITED_BIAS_OFF 0u
#define SITED_BIAS_PULL_UP 1u
#define SITED_BIAS_PULL_DOWN 2u

#define SITED_LOG_ERROR 1u
#define SITED_LOG_WARN 2u
#define SITED_LOG_INFO 3u
#define SITED_LOG_DEBUG 4u

#define SITED_ROLE_INPUT 1u  /* reads an input pin; `sitectl sim` applies */
#define SITED_ROLE_OUTPUT 2u /* drives an output; `sitectl set` applies */

/* "No hardware PWM chip/channel configured": software PWM. */
#define SITED_PWM_NONE UINT32_MAX

/* A UTF-8 string borrowed for one call; not NUL-terminated. */
typedef struct sited_str {
	const char *ptr;
	size_t len;
} sited_str;

#define SITED_STR(literal) ((sited_str){ (literal), sizeof(literal) - 1 })

#if SITED_PLUGIN_ABI_MINOR >= 1
#define SITED_HOST_RET_1_1 int32_t
#else
#define SITED_HOST_RET_1_1 void
#endif

/* The callbacks the host gives each device instance; valid until the instance is destroyed.
 * Pass `ctx` back as the first argument of each. */
typedef struct sited_host {
	uint32_t size;
	uint32_t abi_version; /* the major version agreed on */
	void *ctx;
	SITED_HOST_RET_1_1 (*log)(void *ctx, uint32_t level, sited_str msg);
	/* The message explaining the SITED_STATUS_ERROR/PANIC about to be returned. */
	SITED_HOST_RET_1_1 (*set_error)(void *ctx, sited_str msg);
	/* Monotonic microseconds since the daemon started. */
	uint64_t (*now_us)(void *ctx);
	/* rest_level: what the input shows when nothing acts on it (simulated pins start there). */
	int32_t (*claim_input)(void *ctx, uint32_t pin, uint32_t bias, uint32_t rest_level);
	/* Drives the output to safe_level, which the host restores on fault and at stop. */
	int32_t (*claim_output)(void *ctx, uint32_t pin, uint32_t safe_level);
	/* chip/channel SITED_PWM_NONE: software PWM. Starts at safe_pulse_ns. */
	int32_t (*claim_pwm)(void *ctx, uint32_t pin, uint32_t chip, uint32_t channel,
			     uint64_t period_ns, uint64_t safe_pulse_ns);
	int32_t (*read_pin)(void *ctx, uint32_t pin, uint32_t *level);
	int32_t (*write_pin)(void *ctx, uint32_t pin, uint32_t level);
	/* 0 stops pulsing. */
	int32_t (*set_pwm)(void *ctx, uint32_t pin, uint64_t pulse_ns);
	/* Arms (or re-arms) timer `id` to fire after_us from now; on_timer gets it. */
	int32_t (*arm_timer)(void *ctx, uint64_t id, uint64_t after_us);
	int32_t (*cancel_timer)(void *ctx, uint64_t id);
	/* A device event in the device's vocabulary ("pressed", "open", "on", ...). */
	SITED_HOST_RET_1_1 (*emit)(void *ctx, sited_str event);
	/* The device's state as a JSON object with at least "state". */
	SITED_HOST_RET_1_1 (*set_state)(void *ctx, sited_str state_json);
#if SITED_PLUGIN_ABI_MINOR >= 1
	/* The host's minor version. A 1.0 host's table ends before it, and its log, set_error,
	 * emit and set_state return nothing: read their status only if SITED_HOST_HAS_1_1(host). */
	uint32_t abi_minor;
	uint32_t reserved;
#endif
} sited_host;

#if SITED_PLUGIN_ABI_MINOR >= 1
/* Does this host table come from a 1.1 host (or newer)? */
#define SITED_HOST_HAS_1_1(host)                                                      \
	((host)->size >= offsetof(sited_host, reserved) + sizeof(uint32_t) &&            \
	 (host)->abi_minor >= 1)
#endif

/* What a plugin exports. Static for the life of the process. No entry point may be NULL: the
 * host refuses such a plugin at load. */
typedef struct sited_plugin_descriptor {
	uint32_t size;        /* sizeof(sited_plugin_descriptor) */
	uint32_t abi_version; /* SITED_PLUGIN_ABI_VERSION */
	sited_str kind;       /* as `kind = "..."` names it in the config */
	sited_str version;    /* the plugin's own version */
	uint32_t role;        /* SITED_ROLE_INPUT or SITED_ROLE_OUTPUT */
	/* Checks a device config (a JSON object) without creating anything. */
	int32_t (*validate)(const sited_host *host, sited_str config_json);
	/* Creates an instance into *out (kept until destroy): claims the pin, drives outputs to
	 * their safe level, publishes the first state. If it fails but set *out, the host calls
	 * destroy on it. */
	int32_t (*create)(const sited_host *host, sited_str config_json, void **out);
	void (*destroy)(void *instance);
	int32_t (*on_edge)(void *instance, uint32_t pin, uint32_t level, uint64_t at_us);
	int32_t (*on_timer)(void *instance, uint64_t id);
	/* {"set": "<value>"}: `sitectl set` and the site logic. */
	int32_t (*command)(void *instance, sited_str command_json);
	/* Inputs: the pin and level that would make the device report {"sim": "<value>"}. */
	int32_t (*simulate)(void *instance, sited_str request_json, uint32_t *pin, uint32_t *level);
	/* Doors closed, siren and relays off. */
	int32_t (*safe_state)(void *instance);
#if SITED_PLUGIN_ABI_MINOR >= 1
	uint32_t abi_minor;    /* SITED_PLUGIN_ABI_MINOR */
	uint32_t flags;        /* reserved: 0 */
	sited_str description; /* one line for the daemon log, e.g. "push button, debounced" */
#endif
} sited_plugin_descriptor;

/* Marks the one exported symbol (build the rest with -fvisibility=hidden). */
#if defined(__GNUC__) || defined(__clang__)
#define SITED_PLUGIN_EXPORT __attribute__((visibility("default")))
#else
#define SITED_PLUGIN_EXPORT
#endif

/* The one symbol a plugin exports: return the descriptor if one of the n major versions in
 * host_versions is SITED_PLUGIN_ABI_VERSION, otherwise NULL. */
SITED_PLUGIN_EXPORT const sited_plugin_descriptor *sited_plugin_query(const uint32_t *host_versions,
								       size_t n);

#ifdef __cplusplus
}
#endif

#endif /* SITED_PLUGIN_H */
