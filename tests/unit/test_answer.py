from __future__ import annotations

import pytest

from retriever.answer_cleanup import clean_answer, says_not_found
from retriever.answer_types import Answer
from retriever.components import Components
from retriever.generation import FakeGenerator
from retriever.grounding import asked_code, asks_amount, names_code, needs_number, states_amount
from retriever.prompt import NOT_FOUND, PromptTooLongError, build_prompt
from retriever.question import Question
from retriever.support_check import verify
from retriever.types import Chunk, Hit, chunk_id


def _hit(i: int, words: int) -> Hit:
    text = " ".join(f"word{i}_{j}" for j in range(words))
    return Hit(Chunk(chunk_id("d", i, text), "d", i, text, "/d.md", f"Doc {i}", "c"), 1.0 / (i + 1))


def _count(text: str) -> int:
    return FakeGenerator().count_tokens(text)


def test_prompt_never_overflows_and_keeps_the_question() -> None:
    question = "What is the retention period for backups?"
    hits = [_hit(i, 300) for i in range(6)]
    built = build_prompt(question, hits, _count, context_size=1024, max_new_tokens=200)
    assert built.prompt_tokens + 200 <= 1024
    assert question in built.messages[-1]["content"]
    assert 1 <= len(built.hits) < 6  # trimmed sources, not the question
    assert "[1] Doc 0" in built.messages[-1]["content"]


def test_prompt_numbers_sources_in_rank_order() -> None:
    built = build_prompt("q?", [_hit(0, 5), _hit(1, 5)], _count, 2048, 100)
    content = built.messages[-1]["content"]
    assert content.index("[1] Doc 0") < content.index("[2] Doc 1")


def test_question_too_long_for_context_is_an_error() -> None:
    with pytest.raises(PromptTooLongError):
        build_prompt("why " * 600, [_hit(0, 5)], _count, context_size=512, max_new_tokens=100)


def test_clean_answer_removes_loops_and_invalid_citations() -> None:
    text, cited = clean_answer("It is 25 days [1]. It is 25 days [1]. See also [7]. Done [2].", 2)
    assert text == "It is 25 days [1]. See also. Done [2]."
    assert cited == [1, 2]


def test_not_found_detection() -> None:
    assert says_not_found(NOT_FOUND)
    assert says_not_found("")
    assert not says_not_found("Annual leave is 25 days [1].")


def _index(components: Components, text: str, path: str = "/hr/leave.md") -> None:
    """One chunk of one document, in both indexes."""
    chunk = Chunk(chunk_id(path, 0, text), path, 0, text, path, "Leave policy", "default")
    components.store.upsert([chunk], components.embedder.embed([chunk.embedding_text()]))
    components.keyword.add([chunk])


LEAVE = "Parental leave lasts 16 weeks at full pay. It may be split into two blocks."


def _model(components: Components) -> FakeGenerator:
    fake = components.generator
    assert isinstance(fake, FakeGenerator)
    return fake


def _answer_with(components: Components, reply: str, question: str) -> Answer:
    """The checked answer when the fake model writes `reply` to `question`."""
    _model(components).enqueue(reply)
    return components.answers.ask(Question(question))


def test_answer_service_with_fake_model(components: Components) -> None:
    _index(components, LEAVE)
    answer = components.answers.ask(Question("How long is parental leave?"))
    assert not answer.abstained
    # Answer first (the quantity asked for), then the source sentence backing it.
    assert answer.direct_answer == "16 weeks"
    assert answer.answer == "16 weeks \u2013 Parental leave lasts 16 weeks at full pay [1]."
    assert answer.citations == [1]
    assert answer.model_cited is True
    assert answer.sources[0].path == "/hr/leave.md"
    assert set(answer.timings) >= {"retrieve_ms", "generate_ms", "tokens", "tokens_per_s"}
    # The model saw the numbered source and the grounding instruction.
    fake = _model(components)
    assert "[1] Leave policy" in fake.history[-1][-1]["content"]
    assert "only the numbered sources" in fake.history[-1][0]["content"]


def test_model_saying_not_found_gets_the_best_extract(components: Components) -> None:
    # The passage passed the evidence checks: the model's "not found" is a failed answer.
    _index(components, "The canteen opens at 08:00.", "/facilities.txt")
    answer = _answer_with(
        components, "I could not find the answer in the documents.", "When does the canteen open?"
    )
    assert not answer.abstained and answer.mode == "extractive_fallback"
    assert answer.answer == "The canteen opens at 08:00 [1]." and answer.direct_answer == "08:00"


def test_model_saying_not_found_abstains_when_no_extract_fits(components: Components) -> None:
    _index(components, "Canteen:\n1.\n2.", "/facilities.txt")
    answer = _answer_with(
        components, "I could not find the answer in the documents.", "When does the canteen open?"
    )
    assert answer.abstained and answer.answer == NOT_FOUND
    assert answer.sources  # the nearest sources are still shown


def test_empty_index_abstains_without_calling_the_model(components: Components) -> None:
    answer = components.answers.ask(Question("Anything at all?"))
    assert answer.abstained and answer.sources == []
    assert _model(components).history == []


def test_extractive_mode_quotes_without_the_model(components: Components) -> None:
    _index(components, LEAVE)
    answer = components.answers.ask(
        Question("How long is parental leave?", answer_mode="extractive")
    )
    assert answer.answer == "Parental leave lasts 16 weeks at full pay [1]."
    assert answer.mode == "extractive" and answer.citations == [1]
    span = answer.supports[0].span
    assert answer.sources[0].text[span.start : span.end].startswith("Parental leave lasts")
    assert _model(components).history == []


def test_unsupported_generation_falls_back_to_quoting(components: Components) -> None:
    _index(components, LEAVE)
    answer = _answer_with(
        components,
        "Parental leave lasts 52 weeks and includes a company car [1].",
        "How long is parental leave?",
    )
    assert "52" not in answer.answer and "16 weeks" in answer.answer
    assert answer.mode == "extractive_fallback" and answer.dropped == 1
    assert not answer.abstained


def test_verify_closes_the_gap_a_mid_sentence_citation_leaves() -> None:
    checked, supports, dropped = verify(
        "The code [1] is ALM-4471.", ["Loss of signal on a fibre trunk: the code is ALM-4471."], 0.6
    )
    assert checked == "The code is ALM-4471 [1]."
    assert len(supports) == 1 and dropped == 0


def test_a_model_writing_fragments_gets_the_best_extract(components: Components) -> None:
    _index(components, LEAVE)
    answer = _answer_with(
        components, "1 [1]. 16 [1]. Parental leave: [1]. - [1].", "How long is parental leave?"
    )
    assert answer.mode == "extractive_fallback" and answer.dropped == 4
    assert answer.answer == "Parental leave lasts 16 weeks at full pay [1]."
    assert answer.direct_answer == "16 weeks"


def test_a_model_listing_names_it_picked_from_the_sources_gets_the_best_extract(
    components: Components,
) -> None:
    """Each name is backed by a sentence, but the list does not say which one answers."""
    _index(
        components,
        "If you have questions about this maintenance, or if it clashes with critical work, "
        "please contact Tomasz Brenner, Change Manager, on internal extension 2245.",
        "/maintenance.eml",
    )
    _index(
        components,
        "For questions about maintenance of the leave records, contact the HR Service Centre.",
        "/hr/leave.docx",
    )
    answer = _answer_with(
        components,
        "1. HR Service Centre [2].\n2. Change Manager [1].",
        "Who should I contact with questions about the maintenance?",
    )
    assert answer.mode == "extractive_fallback"
    assert answer.direct_answer == "Tomasz Brenner"


def test_a_bare_value_from_a_sentence_about_something_else_gets_the_best_extract(
    components: Components,
) -> None:
    """ "12 weeks" is backed by the adoption-leave sentence, but asked about partner leave the
    better-ranked sentence gives its own value: a bare value says nothing of what it is of."""
    _index(
        components,
        "The partner of a person who gives birth is entitled to 5 weeks of fully paid partner "
        "leave. Employees who adopt a child are entitled to 12 weeks of fully paid adoption "
        "leave. Partner leave may be taken in one block or in separate weeks. The canteen "
        "opens at 08:00. Badges are collected at reception.",
    )
    answer = _answer_with(components, "12 weeks [1].", "How long is fully paid partner leave?")
    assert answer.mode == "extractive_fallback" and answer.direct_answer == "5 weeks"
    # The value of the best-ranked sentence is an answer.
    answer = _answer_with(components, "5 weeks [1].", "How long is fully paid partner leave?")
    assert answer.mode == "generative" and answer.direct_answer == "5 weeks"


def test_a_model_restating_the_question_gets_the_best_extract(components: Components) -> None:
    _index(components, LEAVE)
    answer = _answer_with(
        components,
        "Parental leave is as long as the parental leave [1].",
        "How long is parental leave?",
    )
    assert answer.mode == "extractive_fallback"


def test_a_supported_answer_about_something_else_gets_the_best_extract(
    components: Components,
) -> None:
    """Every word of the model's sentence is in the passage, but about another man's grave: the
    sentence that answers the question is quoted instead."""
    _index(
        components,
        "Grover Cleveland died at his home in Princeton in 1908. He is buried in the Princeton "
        "Cemetery of the Nassau Presbyterian Church. John Adams is buried in a family crypt "
        "beneath the United First Parish Church in Quincy.",
        "/history/presidents.md",
    )
    answer = _answer_with(
        components,
        "He is buried in the Princeton Cemetery of the Nassau Presbyterian Church [1].",
        "Where is John Adams buried?",
    )
    assert answer.mode == "extractive_fallback"
    assert "John Adams is buried in a family crypt" in answer.answer
    assert answer.direct_answer == "Quincy"


def test_an_answer_from_the_best_sentence_is_kept(components: Components) -> None:
    _index(components, LEAVE)
    answer = _answer_with(
        components, "Parental leave lasts 16 weeks [1].", "How long is parental leave?"
    )
    assert answer.mode == "generative" and answer.direct_answer == "16 weeks"


def test_nothing_that_fits_abstains(components: Components) -> None:
    _index(components, "Parental leave:\n1.\n2.\n3.")
    answer = _answer_with(components, "1 [1]. 2 [1].", "How long is parental leave?")
    assert answer.abstained and answer.answer == NOT_FOUND


def test_the_direct_answer_comes_first_then_its_evidence() -> None:
    from retriever.direct_answer import direct_answer

    q = "What hold time do we use on external BGP sessions?"
    assert direct_answer(q, "The hold time on external BGP sessions is 90 seconds [1].") == (
        "90 seconds"
    )
    assert (
        direct_answer(
            "Who is the Head of Service Assurance?",
            "Marta Lindqvist is the Head of Service Assurance.",
        )
        == "Marta Lindqvist"
    )
    assert direct_answer("How much is a new badge?", "A new badge costs EUR 25.") == "EUR 25"
    # Nothing short to take: the whole sentence.
    long = (
        "Leave requests go through a chain of approvals that starts with the team lead and "
        "ends with the HR director and the works council."
    )
    assert direct_answer("Where do leave requests go?", long) == long.rstrip(".")


def test_the_direct_answer_is_the_phrase_the_question_asks_for() -> None:
    from retriever.direct_answer import direct_answer

    # "when" -> the date, not the words around it, and not a date the question names.
    assert direct_answer("When did the depot open?", "In 1921 the depot opened.") == "1921"
    assert (
        direct_answer(
            "When did the bridge reopen after the 1953 flood?",
            "After the 1953 flood the bridge reopened on March 4, 1961, with a new deck.",
        )
        == "March 4, 1961"
    )
    # "who" -> the name the question does not hold; an opener ("While") is no name.
    assert (
        direct_answer(
            "Who suggested the new route?",
            "While Harbour Council is often credited, the new route was suggested by Maria Okoro.",
        )
        == "Maria Okoro"
    )
    # "which county" -> the name ending in that word; "where" -> a name after "in", "at"...
    assert (
        direct_answer(
            "Which county is the mill in?",
            "The mill stands on the river in Kerrow County, Eastland.",
        )
        == "Kerrow County"
    )
    assert (
        direct_answer("Where is the archive kept?", "Since 2004 the archive is kept in Dunmore.")
        == "Dunmore"
    )
    # "Which function/variable/option ...?" in a manual: the name written as code.
    assert (
        direct_answer(
            "Which function must I use instead of ffi_prep_cif for a variadic function?",
            "If the function is variadic, ffi_prep_cif_var must be used instead of ffi_prep_cif.",
        )
        == "ffi_prep_cif_var"
    )
    assert (
        direct_answer(
            "Which option of asn1Decoding turns on strict decoding?",
            "Usage: asn1Decoding [OPTION] FILE. -s, --strict use strict DER decoding.",
        )
        == "--strict"
    )
    # "When ...?" is answered by a time, never by another number ("the 5th floor").
    perch = "The canteen, called The Perch, is on the 5th floor and has a roof terrace."
    assert direct_answer("When is lunch served in The Perch?", perch) == perch.rstrip(".")
    lunch = "Lunch is served in The Perch from 11:30 every weekday."
    assert direct_answer("When is lunch served in The Perch?", lunch) == "11:30 every weekday"
    # A month or a weekday is no person.
    assert (
        direct_answer(
            "Who opened the depot?", "On Monday 4 March the depot was opened by Ana Ruiz."
        )
        == "Ana Ruiz"
    )
    # A code ("P1") is no name; a day and month without a year is a date.
    assert direct_answer(
        "Who chairs the review?", "The review after any P1 is chaired by Ana Ruiz."
    ) == ("Ana Ruiz")
    assert (
        direct_answer(
            "When does the outage window begin?",
            "The window runs from Saturday 17 May to Sunday 18 May 2025.",
        )
        == "17 May"
    )
    # A table row ("Header: value; ...") answers with the value under the header asked for.
    row = "Priority: P2 - High; Response time: 30 minutes; Resolution target: 8 hours"
    assert direct_answer("What is the response time for a P2 incident?", row) == "30 minutes"
    assert direct_answer("What is the resolution target for P2?", row) == "8 hours"
    # A word in several headers ("plan") names each less than one in a single header ("data").
    plan = "Plan code: KT-M; Plan name: Mobile Plus; Monthly price: 19; Data allowance: 30 GB"
    assert direct_answer("How much data is included in the Mobile Plus plan?", plan) == "30 GB"
    assert direct_answer("What is the plan code of Mobile Plus?", plan) == "KT-M"
    # Of two values the question names, a quantity question takes the one holding a quantity.
    alarm = "Severity: Major; Colour in Skywatch: Orange; Acknowledge within: 15 minutes"
    asked = "How quickly does a Major alarm have to be acknowledged in Skywatch?"
    assert direct_answer(asked, alarm) == "15 minutes"
    assert direct_answer("What colour is a Major alarm in Skywatch?", alarm) == "Orange"
    # A clause setting the scene before the question word does not hide what is asked.
    assert (
        direct_answer(
            "Before maintenance on a router, how long do I wait after setting the bit?",
            "After the work, clear the bit, wait another 180 seconds and verify the traffic.",
        )
        == "180 seconds"
    )
    # "how many" -> a number written as a word counts too.
    assert direct_answer("How many depots are there?", "There are three depots.") == "three depots"
    # A question asking for no name or date keeps the trimmed sentence.
    assert (
        direct_answer("What do otters eat?", "Otters eat fish, crabs and frogs.")
        == "fish, crabs and frogs"
    )


def test_a_direct_answer_leaves_no_dangling_words_or_brackets() -> None:
    from retriever.direct_answer import direct_answer

    # An adverb left at the cut ("are also") goes with the words restating the question.
    assert (
        direct_answer(
            "What part of a lynx is very important for hearing?",
            "The long tufted ears of a lynx are also very important for hearing.",
        )
        == "long tufted ears"
    )
    # A bracket the cut opened or closed goes; a whole one stays.
    assert (
        direct_answer(
            "What does the pump run on?",
            "The pump runs on diesel fuel (also called gas oil) in winter.",
        )
        == "diesel fuel (also called gas oil) in winter"
    )
    assert direct_answer("What is Varnia?", "Varnia ( ), is a small island state.") == (
        "small island state"
    )
    assert (
        direct_answer(
            "How do whales call over long distances?",
            "Over long distances whales call with low sounds (",
        )
        == "low sounds"
    )
    # An apostrophe is no quote to balance.
    assert direct_answer(
        "Whose bikes were stolen?", "The bikes stolen were the students\u2019."
    ).endswith("students\u2019")


def test_a_paraphrase_is_followed_by_the_source_sentence_it_rests_on() -> None:
    from retriever.direct_answer import with_evidence

    source = [
        "The Legal Tender Act of 1862 established the United States Note, the first paper "
        "currency in United States history. It was repealed later."
    ]
    question = "What did the Legal Tender Act of 1862 establish?"
    said = (
        "The Legal Tender Act of 1862 established the United States Note, a Civil War currency [1]."
    )
    checked, supports, _ = verify(said, source, 0.6, question)
    text, _, shown = with_evidence(question, checked, supports, source)
    assert (
        text.startswith(checked)
        and "the first paper currency in United States history [1]." in text
    )
    assert [s.n for s in shown] == [1] and shown[0].span.text.startswith("The Legal Tender Act")


def test_without_a_short_phrase_in_the_model_words_the_direct_answer_is_the_sources() -> None:
    """The model restated the whole sentence (one word changed): the direct answer is the
    phrase of the source sentence it rests on, and that sentence is what is quoted."""
    from retriever.direct_answer import with_evidence

    source = ["The zorse is a hybrid animal resulting from a union between a zebra and a horse."]
    question = "What is a hybrid animal resulting from a union between a zebra and a horse?"
    said = "The zorse is a hybrid animal resulting from a union between a zebra and a pony [1]."
    checked, supports, _ = verify(said, source, 0.6, question)
    assert checked
    text, direct, _ = with_evidence(question, checked, supports, source)
    assert direct == "zorse"
    assert text == f"zorse \u2013 {source[0][:-1]} [1]."


def test_one_item_left_of_a_list_is_a_sentence() -> None:
    source = ["The basic course took about 18 months of schooling in total."]
    checked, _, _ = verify(
        "1. The basic course took about 18 months of schooling [1].\n2. It was hard.",
        source,
        0.6,
        "How long was the basic course?",
    )
    assert checked == "The basic course took about 18 months of schooling [1]."


def test_a_number_asked_after_a_preposition_is_the_one_nearest_the_question() -> None:
    from retriever.direct_answer import direct_answer

    said = (
        "The go/no-go decision for a rollback is taken at 01:15, and all systems are "
        "available again by 02:00."
    )
    assert direct_answer("At what time is the go/no-go decision for a rollback?", said) == "01:15"
    assert direct_answer("By what time are all systems available again?", said) == "02:00"
    # "How long" wants a span of time, not the count before it.
    assert (
        direct_answer(
            "How long will each VPN interruption last?",
            "VPN: two short interruptions of about 20 minutes each, around 22:30 and 01:00.",
        )
        == "20 minutes each"
    )
    # A number the question names (the code "P1") is not the answer.
    assert (
        direct_answer(
            "How long after a P1 must the review be published?",
            "For a P1 the review must be published within 10 business days.",
        )
        == "10 business days"
    )


def test_a_preamble_is_not_part_of_the_answer() -> None:
    assert clean_answer("The answer to this question is: It is 25 days [1].", 1)[0] == (
        "It is 25 days [1]."
    )
    assert clean_answer("Answer: 90 seconds [1].", 1)[0] == "90 seconds [1]."


def test_a_quantity_is_answered_from_the_best_sentence_holding_one() -> None:
    from retriever.direct_answer import answering_support
    from retriever.grounding import Span, Support

    def support(text: str, score: float) -> Support:
        return Support(1, Span(0, len(text), text), score)

    restates = support("Set the overload bit on the router under maintenance.", 0.9)
    counts = support("Wait 180 seconds after the work on the router.", 0.6)
    timed = [restates, support("The router has 2 line cards.", 0.8), counts]
    assert answering_support("How long do I wait on the router?", timed) is counts
    assert answering_support("How many line cards has the router?", timed).score == 0.8
    # "When ...?" takes only a sentence holding a date or a time.
    floor = support("The canteen is on the 5th floor.", 0.9)
    hours = support("The canteen opens at 08:00.", 0.5)
    assert answering_support("When does the canteen open?", [floor, hours]) is hours
    assert answering_support("When does the canteen open?", [floor]) is floor
    farming = support("By about 6000 BC, farming had appeared in the valley.", 0.9)
    dam = support("The dam was completed in 1971.", 0.6)
    assert answering_support("When did farming appear in the valley?", [farming, dam]) is farming
    # Anything else, or no sentence holding a number: the best scored one.
    assert answering_support("What is set on the router?", timed) is restates
    assert answering_support("How long do I wait?", [restates]) is restates


DPKG = (
    "The proposal would be to add support for a new Protected field to dpkg. "
    "Packages marked Protected cannot be removed without a force option. "
    "The Protected field was first supported in dpkg 1.20.1."
)


@pytest.mark.parametrize("mode", ["generative", "extractive"])
def test_a_version_asked_for_is_a_number_or_an_abstention(
    components: Components, mode: str
) -> None:
    """Asked for a version, sentences about the subject without one answer nothing."""
    _index(components, DPKG.rsplit(" The Protected", 1)[0], "/dpkg/protected.txt")
    question = "Which dpkg version first supported the Protected field?"
    _model(components).enqueue("The proposal would be to add support for a new Protected field.")
    answer = components.answers.ask(Question(question, answer_mode=mode))  # type: ignore[arg-type]
    assert answer.abstained and answer.answer == NOT_FOUND
    assert answer.abstention_reason == "no passage found gives the number the question asks for"
    assert answer.sources and answer.citations == []

    components.keyword.clear()
    components.store.clear()
    _index(components, DPKG, "/dpkg/protected.txt")
    _model(components).enqueue("The Protected field was first supported in dpkg 1.20.1 [1].")
    answer = components.answers.ask(Question(question, answer_mode=mode))  # type: ignore[arg-type]
    assert not answer.abstained and "1.20.1" in answer.answer


def test_what_only_a_number_answers() -> None:
    assert needs_number("Which dpkg version first supported the Protected field?")
    assert needs_number("What uid is assigned to the www-data user?")
    assert needs_number("On what port does the server listen?")
    assert needs_number("Before an upgrade, what percentage of disk must be free?")
    # Counts and amounts are often said in words ("none", "all", "every few years").
    assert not needs_number("How many days can be carried over?")
    assert not needs_number("What does the version field hold?")
    assert not needs_number("Which group controls the libvirt daemon?")


@pytest.mark.parametrize(
    "question",
    [
        "How many days can be carried over?",
        "What's the maximum number of watch expressions the debugger accepts?",
        "What is the minimum length of a password?",
        "What was the total number of casualties?",
    ],
)
def test_a_quantity_worded_as_a_noun_is_asked_like_how_many(question: str) -> None:
    assert asks_amount(question)


@pytest.mark.parametrize(
    "question", ["What is the default value of PASS_MAX_DAYS?", "What is the minister called?"]
)
def test_a_value_or_a_name_is_not_a_quantity(question: str) -> None:
    assert not asks_amount(question)


@pytest.mark.parametrize("mode", ["generative", "extractive"])
def test_a_number_about_something_else_does_not_answer(components: Components, mode: str) -> None:
    """The only number found is another user's uid: the question about www-data abstains."""
    _index(
        components,
        "The www-data user is assigned to web servers: data they write is owned by www-data.",
        "/a.txt",
    )
    _index(
        components,
        "Since gnats has been removed, this user and group are no longer created by default; "
        "they had uid/gid 41.",
        "/b.txt",
    )
    _model(components).enqueue("The gnats user and group had uid/gid 41 [2].")
    question = Question("What uid is assigned to the www-data user?", answer_mode=mode)  # type: ignore[arg-type]
    answer = components.answers.ask(question)
    assert answer.abstained, answer.answer
    assert answer.abstention_reason == "no passage found gives the number the question asks for"


def test_a_model_answer_without_the_number_asked_for_gets_the_extract_that_gives_it(
    components: Components,
) -> None:
    _index(
        components,
        "Every security report is acknowledged and triaged by the security team. Your report "
        "will be acknowledged within 5 days.",
        "/security.md",
    )
    answer = _answer_with(
        components,
        "Every security report is acknowledged and triaged by the security team [1].",
        "How long does it take before my security report is acknowledged?",
    )
    assert answer.mode == "extractive_fallback", answer.answer
    assert answer.direct_answer == "5 days"


@pytest.mark.parametrize("mode", ["generative", "extractive"])
def test_how_much_without_an_amount_in_the_sources_abstains(
    components: Components, mode: str
) -> None:
    """Asked how much the bounty pays, sentences about the bounty that state no amount are
    not an answer; one stating it, in figures or in words, is."""
    _index(
        components,
        "The project runs an official bug bounty program for security researchers. A "
        "vulnerability must be in the project itself for the bug bounty program to pay out.",
        "/security.md",
    )
    for question in (
        "How much does the bug bounty program pay out for a vulnerability?",
        "What is the maximum amount the bug bounty program pays out for a vulnerability?",
    ):
        _model(components).enqueue("The project runs an official bug bounty program [1].")
        answer = components.answers.ask(Question(question, answer_mode=mode))  # type: ignore[arg-type]
        assert answer.abstained, (question, answer.answer)
        reason = "no passage found gives the amount the question asks for"
        assert answer.abstention_reason == reason
    assert states_amount("It pays nothing for reports already known.", question)
    assert not states_amount("It pays out for reports.", question)


@pytest.mark.parametrize("mode", ["generative", "extractive"])
def test_asked_which_variable_or_option_sentences_naming_none_are_no_answer(
    components: Components, mode: str
) -> None:
    """Asked which environment variable points the tool at a mirror, sentences about the
    tool's downloads that name no variable are about the subject, not the answer."""
    _index(
        components,
        "Corepack usually downloads the package manager releases straight from their "
        "registries. Downloads are checked against known hashes before they are used.",
        "/corepack.md",
    )
    question = "Which environment variable makes Corepack download package manager releases?"
    _model(components).enqueue("Corepack usually downloads the releases from registries [1].")
    answer = components.answers.ask(Question(question, answer_mode=mode))  # type: ignore[arg-type]
    assert answer.abstained, answer.answer
    reason = "no passage found names the environment variable the question asks for"
    assert answer.abstention_reason == reason
    assert asked_code("What does the --novalid switch do?") is None
    assert names_code("option", "-u, --include-untracked Stash untracked files.", "Which flag?")
    assert names_code("signal", "SIGHUP flushes the cache.", "Which signal flushes it?")
    assert not names_code("environment variable", "It reads TMPDIR.", "Is TMPDIR read?")


def test_a_model_answer_giving_the_asked_quantity_second_leads_with_it(
    components: Components,
) -> None:
    _index(
        components,
        "Report security bugs in the gateway through the tracker. Normally, your report will "
        "be acknowledged within 5 days of the initial response.",
        "/security.md",
    )
    answer = _answer_with(
        components,
        "Report security bugs in the gateway through the tracker [1]. Normally, your report "
        "will be acknowledged within 5 days [1].",
        "How long before my security report for the gateway is acknowledged?",
    )
    assert answer.mode == "generative", answer.answer
    assert answer.answer.startswith("Normally, your report will be acknowledged within 5 days")
    assert "tracker" in answer.answer  # moved, not dropped
    assert answer.direct_answer == "5 days"


def test_a_claim_reversing_its_source_is_dropped() -> None:
    source = (
        "If this flag is set to accept-new then ssh will automatically add new host keys to "
        "the known_hosts file, but will not permit connections to hosts with changed host keys."
    )
    question = "What happens if StrictHostKeyChecking is set to accept-new?"
    reversed_claim = (
        "If it is set to accept-new, ssh will automatically add new host keys to the "
        "known_hosts file and allow connections to hosts whose host key has changed [1]."
    )
    checked, supports, dropped = verify(reversed_claim, [source], 0.5, question)
    assert (checked, dropped) == ("", 1)
    # A claim that keeps the negation, or leaves the denied part out, stands.
    for claim in (
        "With accept-new, ssh will not permit connections to hosts with changed host keys [1].",
        "With accept-new, ssh will automatically add new host keys to the known_hosts file [1].",
    ):
        checked, supports, dropped = verify(claim, [source], 0.5, question)
        assert dropped == 0 and supports, claim


def test_a_claim_resting_on_a_question_in_the_source_is_dropped() -> None:
    source = (
        "Is it possible to attach Valgrind to a program that is already running? No. "
        "To trace child processes, use the --trace-children=yes option."
    )
    question = "How do I get Valgrind to check the child processes a program forks?"
    checked, _, dropped = verify(
        "Is it possible to attach Valgrind to a program that is already running [1]? To "
        "trace child processes, use the --trace-children=yes option [1].",
        [source],
        0.5,
        question,
    )
    assert dropped == 1
    assert checked == "To trace child processes, use the --trace-children=yes option [1]."
