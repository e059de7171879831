// SPDX-License-Identifier: GPL-2.0
/*
 * sited's test-only PWM chips, for the VM tier (tests/vm). The kernel's sysfs PWM interface has
 * no simulator, so this registers `chips` platform devices "sited-test-pwm.0", ".1", ..., each
 * with a PWM chip whose channels accept every setting; the kernel's own pwm_apply trace event
 * records what sited wrote. Chip numbers follow registration (pwmchip0, pwmchip4, ...), so a
 * test can put a decoy chip where a number would point. With hold=N an in-kernel consumer holds
 * channel N of the last chip, as pwm-fan holds a channel on a Raspberry Pi 5, so exporting it
 * from sysfs fails with EBUSY. The holder is also a device, "sited-test-fan", linked to the chip as
 * its consumer (the PWM core links pwm-fan to its chip the same way when it looks the PWM up in
 * the device tree), so a non-root reader sees /sys/.../sited-test-pwm.N/consumer:platform:...
 * where debugfs, root only, names the channel's holder.
 */
#include <linux/device.h>
#include <linux/err.h>
#include <linux/module.h>
#include <linux/platform_device.h>
#include <linux/pwm.h>

static int hold = -1;
module_param(hold, int, 0444);
MODULE_PARM_DESC(hold, "channel of the last chip an in-kernel consumer holds (-1: none)");

static unsigned int chips = 1;
module_param(chips, uint, 0444);
MODULE_PARM_DESC(chips, "number of chips (devices sited-test-pwm.0 ..)");

static unsigned int npwm = 4;
module_param(npwm, uint, 0444);
MODULE_PARM_DESC(npwm, "number of channels");

struct test_pwm {
	struct pwm_chip chip;
	struct pwm_device *held;
	struct platform_device *fan;
	struct device_link *link;
};

static int test_pwm_apply(struct pwm_chip *chip, struct pwm_device *pwm,
			  const struct pwm_state *state)
{
	return 0;
}

static const struct pwm_ops test_pwm_ops = {
	.apply = test_pwm_apply,
	.owner = THIS_MODULE,
};

static int test_pwm_probe(struct platform_device *pdev)
{
	struct test_pwm *t;
	int ret;

	t = devm_kzalloc(&pdev->dev, sizeof(*t), GFP_KERNEL);
	if (!t)
		return -ENOMEM;
	t->chip.dev = &pdev->dev;
	t->chip.ops = &test_pwm_ops;
	t->chip.npwm = npwm;
	ret = pwmchip_add(&t->chip);
	if (ret)
		return ret;
	if (hold >= 0 && hold < (int)npwm && pdev->id == (int)chips - 1) {
		t->held = pwm_request_from_chip(&t->chip, hold, "test-fan");
		if (IS_ERR(t->held)) {
			ret = PTR_ERR(t->held);
			pwmchip_remove(&t->chip);
			return ret;
		}
		t->fan = platform_device_register_simple("sited-test-fan", -1, NULL, 0);
		if (IS_ERR(t->fan)) {
			ret = PTR_ERR(t->fan);
			pwm_free(t->held);
			pwmchip_remove(&t->chip);
			return ret;
		}
		t->link = device_link_add(&t->fan->dev, &pdev->dev, DL_FLAG_STATELESS);
	}
	platform_set_drvdata(pdev, t);
	return 0;
}

static int test_pwm_remove(struct platform_device *pdev)
{
	struct test_pwm *t = platform_get_drvdata(pdev);

	if (t->link)
		device_link_del(t->link);
	if (!IS_ERR_OR_NULL(t->fan))
		platform_device_unregister(t->fan);
	if (t->held)
		pwm_free(t->held);
	pwmchip_remove(&t->chip);
	return 0;
}

static struct platform_driver test_pwm_driver = {
	.probe = test_pwm_probe,
	.remove = test_pwm_remove,
	.driver = { .name = "sited-test-pwm" },
};

#define MAX_CHIPS 4
static struct platform_device *test_pwm_devices[MAX_CHIPS];

static void test_pwm_unregister(void)
{
	int i;

	for (i = MAX_CHIPS - 1; i >= 0; i--) {
		if (!IS_ERR_OR_NULL(test_pwm_devices[i]))
			platform_device_unregister(test_pwm_devices[i]);
		test_pwm_devices[i] = NULL;
	}
}

static int __init test_pwm_init(void)
{
	unsigned int i;
	int ret;

	if (chips < 1 || chips > MAX_CHIPS)
		return -EINVAL;
	ret = platform_driver_register(&test_pwm_driver);
	if (ret)
		return ret;
	for (i = 0; i < chips; i++) {
		test_pwm_devices[i] = platform_device_register_simple("sited-test-pwm", i, NULL, 0);
		if (IS_ERR(test_pwm_devices[i])) {
			ret = PTR_ERR(test_pwm_devices[i]);
			test_pwm_unregister();
			platform_driver_unregister(&test_pwm_driver);
			return ret;
		}
	}
	return 0;
}

static void __exit test_pwm_exit(void)
{
	test_pwm_unregister();
	platform_driver_unregister(&test_pwm_driver);
}

module_init(test_pwm_init);
module_exit(test_pwm_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("sited's test-only PWM chip (accepts every setting; the pwm_apply trace shows them)");
