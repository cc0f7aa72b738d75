"""A real browser through live_server_url: headless Chromium from Debian
(chromium, chromium-driver), driven by selenium as Django's own Selenium
tests do, with Debian's chromedriver (nothing is downloaded)."""
import os
import shutil
import unittest

from notes.models import Note
from runfcgi_compat.testing import StaticFastCGILiveServerTestCase

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--disable-background-networking", "--disable-extensions", "--no-first-run",
         "--ignore-certificate-errors", "--window-size=1024,768")


def missing():
    """What is missing to drive the browser, or None."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install selenium)"
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.path.exists(path):
            return (f"{path} is not installed (Debian packages chromium and chromium-driver; "
                    "scripts/system-packages installs them)")
    return None


class BrowserThroughNginx(StaticFastCGILiveServerTestCase):
    https = True  # The browser posts the form with CSRF's https checks too.

    @classmethod
    def setUpClass(cls):
        reason = missing()
        if reason:
            if os.environ.get("CI") == "true":
                raise AssertionError(reason)
            raise unittest.SkipTest(reason)
        super().setUpClass()
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in FLAGS:
            options.add_argument(flag)
        profile = cls.live_server.workdir + "/chromium"
        options.add_argument(f"--user-data-dir={profile}")
        service = Service(executable_path=CHROMEDRIVER, log_output=os.devnull)
        cls.browser = webdriver.Chrome(options=options, service=service)
        cls.addClassCleanup(shutil.rmtree, profile, True)
        cls.addClassCleanup(cls.browser.quit)

    def wait_for(self, condition, what):
        """Wait until ``condition(browser)``; fail with the page shown if it never is."""
        from selenium.common.exceptions import TimeoutException
        from selenium.webdriver.support.wait import WebDriverWait

        try:
            WebDriverWait(self.browser, 30).until(condition)
        except TimeoutException:
            self.fail(f"{what} did not appear at {self.browser.current_url}:\n"
                      f"{self.browser.page_source[:2000]}\n{self.live_server.logs()}")

    def test_fill_in_the_form_and_see_the_styled_page(self):
        from selenium.webdriver.common.by import By

        self.browser.get(f"{self.live_server_url}/notes/new/")
        self.wait_for(lambda browser: browser.find_elements(By.ID, "text"), "the form")
        self.browser.find_element(By.ID, "text").send_keys("typed in Chromium")
        self.browser.find_element(By.ID, "save").click()
        # The form redirects to the list of notes (JSON), once it is saved.
        self.wait_for(lambda browser: "typed in Chromium" in browser.page_source,
                      "the saved note")
        self.assertTrue(self.browser.current_url.endswith("/notes/"))
        self.assertEqual(list(Note.objects.values_list("text", flat=True)),
                         ["typed in Chromium"])
        # The stylesheet came from the front end's static files.
        self.browser.get(f"{self.live_server_url}/about/")
        title = self.browser.find_element(By.ID, "title")
        self.assertEqual(title.value_of_css_property("color"), "rgba(0, 128, 0, 1)")
