/*
 * A reader for the flat JSON objects sited hands a plugin ({"pin": 17, "active-low": true,
 * "set": "on"}): string, integer and boolean values, no nesting. Test plugins only; a real C
 * plugin would use a JSON library.
 */
#ifndef SITED_TEST_FLATJSON_H
#define SITED_TEST_FLATJSON_H

#include <stddef.h>
#include <stdio.h>
#include <string.h>

struct flat_reader {
	const char *p, *end;
};

static void flat_space(struct flat_reader *r)
{
	while (r->p < r->end && (*r->p == ' ' || *r->p == '\t' || *r->p == '\n' || *r->p == '\r'))
		r->p++;
}

static int flat_char(struct flat_reader *r, char c)
{
	flat_space(r);
	if (r->p < r->end && *r->p == c) {
		r->p++;
		return 1;
	}
	return 0;
}

/* A string without escapes, copied into buf (NUL-terminated). */
static int flat_string(struct flat_reader *r, char *buf, size_t cap)
{
	size_t n = 0;

	if (!flat_char(r, '"'))
		return 0;
	while (r->p < r->end && *r->p != '"') {
		if (*r->p == '\\' || n + 1 >= cap)
			return 0;
		buf[n++] = *r->p++;
	}
	if (r->p >= r->end)
		return 0;
	r->p++;
	buf[n] = 0;
	return 1;
}

enum flat_kind { FLAT_STRING, FLAT_NUMBER, FLAT_BOOL };

struct flat_value {
	enum flat_kind kind;
	char text[128];
	unsigned long number;
	int boolean;
};

static int flat_value(struct flat_reader *r, struct flat_value *v)
{
	flat_space(r);
	if (r->p < r->end && *r->p == '"') {
		v->kind = FLAT_STRING;
		return flat_string(r, v->text, sizeof v->text);
	}
	if (r->end - r->p >= 4 && memcmp(r->p, "true", 4) == 0) {
		r->p += 4;
		v->kind = FLAT_BOOL;
		v->boolean = 1;
		return 1;
	}
	if (r->end - r->p >= 5 && memcmp(r->p, "false", 5) == 0) {
		r->p += 5;
		v->kind = FLAT_BOOL;
		v->boolean = 0;
		return 1;
	}
	if (r->p < r->end && *r->p >= '0' && *r->p <= '9') {
		v->kind = FLAT_NUMBER;
		v->number = 0;
		while (r->p < r->end && *r->p >= '0' && *r->p <= '9') {
			if (v->number > 1000000000ul)
				return 0;
			v->number = v->number * 10 + (unsigned long)(*r->p++ - '0');
		}
		return 1;
	}
	return 0;
}

/*
 * Calls field(key, value, arg) for each member; returns 0 and says why in err if the text is
 * not a flat object or field() refuses (returns 0 after writing err).
 */
static int flat_object(const char *text, size_t len, char *err, size_t errcap,
		       int (*field)(const char *key, const struct flat_value *v, void *arg, char *err,
				    size_t errcap),
		       void *arg)
{
	struct flat_reader r = { text, text + len };
	char key[64];
	struct flat_value v;

	if (!flat_char(&r, '{'))
		goto malformed;
	if (flat_char(&r, '}'))
		goto done;
	do {
		if (!flat_string(&r, key, sizeof key) || !flat_char(&r, ':') || !flat_value(&r, &v))
			goto malformed;
		if (!field(key, &v, arg, err, errcap))
			return 0;
	} while (flat_char(&r, ','));
	if (!flat_char(&r, '}'))
		goto malformed;
done:
	flat_space(&r);
	if (r.p == r.end)
		return 1;
malformed:
	snprintf(err, errcap, "malformed JSON object near byte %ld", (long)(r.p - text));
	return 0;
}

#endif
