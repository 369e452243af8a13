"""The agents' workspace in headless Chromium, against a real daemon and the fake Chatra: the
conversation list, the thread and its reply box, the editable client panel, channel access, the
admin view, a phone-width screen. Each test saves screenshots (``RULEKIT_SCREENSHOTS`` names a
folder to keep them; by default they go to the test's temporary folder)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from browser import chromium
from browser import wait_for as wait_briefly
from workspace_helpers import CONVERSATION, TOKENS, VISITOR, Workspace, path, running

FIRST_TEXT = "Hi, is the blue kettle in stock?"
SECOND_TEXT = "Also, do you ship to Austria?"


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Workspace]:
    with running("sqlite", tmp_path) as workspace:
        yield workspace


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("RULEKIT_SCREENSHOTS") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def wait_for(condition: Any, what: str) -> Any:
    """Wait for ``condition`` with the patience of a busy machine (a daemon, a browser and the
    fake all share it)."""
    return wait_briefly(condition, what, timeout=60.0)


def matched(record: Any) -> list[str]:
    return [rule["name"] for rule in record.trace["rules"] if rule.get("matched")]


def sign_in(driver: Any, url: str, who: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(f"{url}/console/login")
    wait_for(lambda: driver.find_elements(By.ID, "token"), "the sign-in form")
    driver.find_element(By.ID, "token").send_keys(TOKENS[who])
    driver.find_element(By.ID, "sign-in").click()
    wait_for(
        lambda: driver.execute_script("return document.body.dataset.ready === 'true'"),
        "the console",
    )
    wait_for(
        lambda: driver.find_elements(By.CSS_SELECTOR, "#connection[data-state='open']"),
        "the live stream",
    )


def sign_out(driver: Any) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.ID, "sign-out").click()
    wait_for(lambda: driver.find_elements(By.ID, "token"), "the sign-in form again")


def list_item(driver: Any, conversation: str = CONVERSATION) -> Any:
    from selenium.webdriver.common.by import By

    found = driver.find_elements(By.CSS_SELECTOR, f'#conversations li[data-id="{conversation}"]')
    return found[0] if found else None


def open_conversation(driver: Any, conversation: str = CONVERSATION) -> None:
    """Click the conversation's entry in the list. The list is redrawn whenever an update
    arrives, so the entry found may be gone when it is clicked: find it again then."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    def click() -> bool:
        item = list_item(driver, conversation)
        if item is None:
            return False
        try:
            item.find_element(By.TAG_NAME, "button").click()
        except StaleElementReferenceException:
            return False
        return True

    wait_for(click, "the conversation in the list, to open it")


def thread_texts(driver: Any) -> list[str]:
    # read at once in the page: the thread is redrawn whenever the conversation changes
    script = "return Array.from(document.querySelectorAll('#thread li .text'), e => e.innerText)"
    return list(driver.execute_script(script))


@pytest.mark.slow
def test_an_agent_answers_and_edits_the_client_and_another_sees_nothing_of_it(
    site: Workspace, tmp_path: Path, shots: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    site.started()
    with site.client("anna") as api:
        listed = api.get("conversations").json()["conversations"]
    display_name = listed[0]["client"]["display_name"]

    with chromium(tmp_path / "profile") as page:
        sign_in(page, site.url, "anna")
        item = wait_for(lambda: list_item(page), "the conversation in the list")
        assert display_name in item.text
        assert page.title == "rulekit console"  # what existed at the first visit is seen

        # a new message arrives live: the list marks it unread, the title counts it
        site.webhook("chat_fragment_client_message.json")
        wait_for(lambda: page.title.startswith("(1) "), "the unread count in the title")
        # read in one script call: the list is redrawn as updates arrive
        entry = page.execute_script(
            "const li = document.querySelector(arguments[0]);"
            " return li && [li.className, li.textContent];",
            f'#conversations li[data-id="{CONVERSATION}"]',
        )
        assert "unread" in entry[0].split()
        assert SECOND_TEXT in entry[1]

        # opening it shows the thread; it is read now
        open_conversation(page)
        wait_for(lambda: thread_texts(page) == [FIRST_TEXT, SECOND_TEXT], "the thread")
        wait_for(lambda: page.title == "rulekit console", "the title without unread")
        page.save_screenshot(str(shots / "workspace-1280.png"))

        # Shift+Enter is a new line, Enter sends, as the signed-in agent
        box = page.find_element(By.ID, "reply-text")
        box.send_keys("Yes, in stock.", Keys.SHIFT, Keys.ENTER, Keys.SHIFT, "Shall I reserve one?")
        box.send_keys(Keys.ENTER)
        wait_for(lambda: site.chatra.sent, "the reply at Chatra")
        (sent,) = site.chatra.sent
        assert sent["text"] == "Yes, in stock.\nShall I reserve one?"
        assert (sent["clientId"], sent["agentEmail"]) == (VISITOR, "anna@example.com")
        wait_for(
            lambda: "Yes, in stock.\nShall I reserve one?" in thread_texts(page),
            "the reply in the thread",
        )
        assert page.find_element(By.ID, "reply-text").get_attribute("value") == ""

        # the visitor gets a name: Chatra hears it, a client_updated rule fires
        name = page.find_element(By.ID, "client-name")
        name.clear()
        name.send_keys("Maria Lopez")
        page.find_element(By.ID, "client-save").click()
        wait_for(lambda: site.chatra.client_updates, "the change at Chatra")
        assert site.chatra.client_updates == [(VISITOR, {"name": "Maria Lopez"})]
        wait_for(
            lambda: any(
                "Welcome named clients" in matched(r) for r in site.events("client_updated")
            ),
            "the client_updated rule",
        )
        wait_for(lambda: "Maria Lopez" in list_item(page).text, "the new name in the list")
        fired = page.find_element(By.ID, "rules-fired").text
        assert "Count agent replies" in fired and "Welcome named clients" in fired

        # a phone-width screen: one column, nothing wider than the screen
        page.set_window_size(390, 844)
        wait_for(
            lambda: page.execute_script(
                "return document.documentElement.scrollWidth <= window.innerWidth"
            ),
            "a page as narrow as the screen",
        )
        assert page.find_element(By.ID, "reply-text").is_displayed()
        page.save_screenshot(str(shots / "workspace-phone.png"))
        page.set_window_size(1280, 800)

        # Boris handles another channel: nothing of Anna's channel reaches his page
        sign_out(page)
        sign_in(page, site.url, "boris")
        wait_for(
            lambda: page.find_element(By.ID, "no-conversations").is_displayed(),
            "an empty list",
        )
        page.get(f"{site.url}/console/#/c/online-chat/{quote(CONVERSATION, safe='')}")
        wait_for(
            lambda: page.execute_script("return document.body.dataset.ready === 'true'"),
            "the console",
        )
        wait_for(lambda: "404" in page.find_element(By.ID, "conversation").text, "a refusal")
        source = page.page_source
        for secret in (FIRST_TEXT, SECOND_TEXT, "Maria Lopez", "Shall I reserve one?"):
            assert secret not in source
        page.save_screenshot(str(shots / "workspace-other-channel.png"))


def stored_conversation(site: Workspace) -> Any:
    with site.daemon.store.reading() as state:
        found = state.find_conversation("online-chat", CONVERSATION)
    return found[1] if found else None


def test_the_panel_changes_assignee_priority_and_tags(
    site: Workspace, tmp_path: Path, shots: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.select import Select

    site.started()
    with chromium(tmp_path / "profile") as page:
        sign_in(page, site.url, "anna")
        open_conversation(page)
        wait_for(lambda: page.find_element(By.ID, "state-form").is_displayed(), "the panel")
        # only agents with access to the channel are offered (not Boris)
        assignee = Select(page.find_element(By.ID, "state-assignee"))
        offered = [o.get_attribute("value") for o in assignee.options]
        assert offered == ["", "anna@example.com", "carla@example.com"]

        assignee.select_by_value("carla@example.com")
        wait_for(
            lambda: (stored_conversation(site) or {}).assignee == "carla@example.com",
            "the assignment",
        )
        Select(page.find_element(By.ID, "state-priority")).select_by_value("high")
        wait_for(lambda: stored_conversation(site).priority == "high", "the priority")

        # a tag, typed and sent with Enter: a rule on updated makes VIP chats urgent
        page.find_element(By.ID, "state-tag").send_keys("vip", Keys.ENTER)
        wait_for(lambda: stored_conversation(site).tags == ["vip"], "the tag")
        wait_for(
            lambda: (
                Select(
                    page.find_element(By.ID, "state-priority")
                ).first_selected_option.get_attribute("value")
                == "urgent"
            ),
            "the rule's priority in the panel",
        )
        # the panel is redrawn as updates arrive: read it in one script call each time
        wait_for(
            lambda: (
                page.execute_script(
                    "return [...document.querySelectorAll('#state-tags li')]"
                    ".map(li => li.dataset.tag)"
                )
                == ["vip"]
            ),
            "the tag in the panel",
        )
        wait_for(
            lambda: (
                "saved"
                in page.execute_script("return document.getElementById('state-status').textContent")
            ),
            "the panel saying saved",
        )
        page.save_screenshot(str(shots / "panel-edits.png"))

        page.execute_script(
            "document.querySelector('#state-tags button[data-tag=\"vip\"]').click()"
        )
        wait_for(lambda: stored_conversation(site).tags == [], "the tag removed")
        wait_for(lambda: not page.find_elements(By.CSS_SELECTOR, "#state-tags li"), "no tags")
    updates = site.events("updated")
    console = [r for r in updates if r.data["origin"] == "console"]
    assert len(console) == 4  # assignee, priority, tag added, tag removed
    assert {r.data["agent"]["email"] for r in console} == {"anna@example.com"}
    assert any(r.data["origin"] == "rulekit" for r in updates)  # the rule's set: urgent


@pytest.mark.slow
def test_a_dead_reply_is_retried_from_the_admin_page_after_fixing_the_config(
    site: Workspace, tmp_path: Path, shots: Path
) -> None:
    from selenium.webdriver.common.by import By

    site.started()
    config_file = tmp_path / "rulekit.yaml"
    right = config_file.read_text()
    secret = site.chatra.keys["secret_key"]
    config_file.write_text(right.replace(secret, "a-mistyped-secret-key"))
    assert site.reload()
    with site.client("anna") as api:
        job_id = api.post(f"{path()}/messages", json={"text": "Again"}).json()["job_id"]
    wait_for(lambda: site.job(job_id).status == "dead", "the dead letter")

    with chromium(tmp_path / "profile") as page:
        sign_in(page, site.url, "anna")
        page.find_element(By.ID, "nav-admin").click()
        selector = f'#admin-dead li[data-job-id="{job_id}"]'
        entry = wait_for(lambda: page.find_elements(By.CSS_SELECTOR, selector), "the dead letter")
        assert "Chatra rejected the API keys" in entry[0].text
        page.save_screenshot(str(shots / "admin.png"))
        # the admin corrects the key in the config and the daemon reloads it: send it again
        config_file.write_text(right)
        assert site.reload()
        entry[0].find_element(By.CSS_SELECTOR, "button.retry-dead").click()
        wait_for(lambda: site.job(job_id).status == "done", "the retried reply")
        wait_for(lambda: "sent again" in entry[0].text, "the retry's answer on the page")
    assert [s["text"] for s in site.chatra.sent] == ["Again", "Again"]
    statuses = [r.headers["authorization"].endswith(secret) for r in site.chatra.requests]
    assert statuses[-2:] == [False, True]  # refused with the wrong key, sent with the right one


def test_the_admin_page_shows_what_each_rule_did(
    site: Workspace, tmp_path: Path, shots: Path
) -> None:
    from selenium.webdriver.common.by import By

    site.started()
    with site.client("anna") as api:
        job_id = api.post(f"{path()}/messages", json={"text": "Hello"}).json()["job_id"]
        assert api.get("stats").status_code == 403  # the numbers are the admin's
    wait_for(lambda: site.job(job_id).status == "done", "the reply")

    with chromium(tmp_path / "profile") as page:
        sign_in(page, site.url, "admin")
        page.find_element(By.ID, "nav-admin").click()

        def row(rule: str) -> list[str]:
            cells = page.find_elements(By.XPATH, f'//table[@id="admin-stats"]//tr[th="{rule}"]/*')
            return [cell.text for cell in cells]

        counted = wait_for(lambda: row("Count agent replies"), "the rules' numbers")
        assert counted[1:5] == ["1", "1", "0", "0"]  # matched, done, failed, dead
        assert row("Welcome named clients")[1:5] == ["0", "0", "0", "0"]
        assert not page.find_element(By.ID, "admin-no-stats").is_displayed()
        team = page.find_element(By.ID, "admin-team").text  # nobody has a console open
        assert "Anna Weber\noffline" in team
        page.save_screenshot(str(shots / "admin-stats.png"))


def test_an_agent_is_online_with_the_page_open_and_says_when_away(
    site: Workspace, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    def presence() -> dict[str, str]:
        with site.daemon.store.reading() as state:
            return state.presence()

    with chromium(tmp_path / "profile") as page:
        sign_in(page, site.url, "anna")
        wait_for(lambda: presence().get("anna@example.com") == "online", "Anna online")
        choice = page.find_element(By.ID, "presence")
        assert choice.is_displayed()
        Select(choice).select_by_value("away")
        wait_for(lambda: presence().get("anna@example.com") == "away", "Anna away")


def test_a_reply_sent_twice_in_a_row_is_sent_once(site: Workspace, tmp_path: Path) -> None:
    """Enter pressed again (or Send clicked) while the reply is still on its way, before the
    box is emptied: the same reply, not a second one."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    site.started()
    with chromium(tmp_path / "profile") as page:
        sign_in(page, site.url, "anna")
        open_conversation(page)
        wait_for(lambda: thread_texts(page) == [FIRST_TEXT], "the thread")
        box = page.find_element(By.ID, "reply-text")
        box.send_keys("Yes, in stock.")
        box.send_keys(Keys.ENTER, Keys.ENTER)  # the second before the first is answered
        page.find_element(By.ID, "reply-send").click()
        wait_for(lambda: "Yes, in stock." in thread_texts(page), "the reply in the thread")
        # a reply after it: once it is recorded, anything sent before it has been too
        box = page.find_element(By.ID, "reply-text")
        wait_for(lambda: box.get_attribute("value") == "", "the emptied reply box")
        box.send_keys("Shall I reserve one?", Keys.ENTER)
        wait_for(lambda: "Shall I reserve one?" in thread_texts(page), "the second reply")
    replies = [record.data["message"]["text"] for record in site.events("agent_replied")]
    assert sorted(replies) == ["Shall I reserve one?", "Yes, in stock."]
    wait_for(lambda: len(site.chatra.sent) == 2, "both replies at Chatra")
    assert sorted(sent["text"] for sent in site.chatra.sent) == sorted(replies)
