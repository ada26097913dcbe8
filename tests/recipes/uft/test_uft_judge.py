import pytest
from tests.openai_stub import StubServer

from llmft.core.errors import LlmftError
from llmft.recipes.uft.judge import (
    SYSTEM_PROMPT,
    EndpointJudge,
    RulesJudge,
    Shot,
    classifier_prompt,
    parse_answer,
)


class FakeChat:
    """Answers Yes when the story mentions a dragon, with reasoning that contains the word 'no'."""

    requests: list[dict] = []

    @staticmethod
    def respond(request):
        body = request["body"]
        if body["model"] == "locked":
            return 401, None
        story = body["messages"][1]["content"].rsplit("<story>", 1)[-1]
        answer = "Yes" if "dragon" in story else "No"
        content = f"<reasoning>I know nothing odd happens until the end.</reasoning>\n<answer>{answer}</answer>"
        return 200, {"choices": [{"message": {"role": "assistant", "content": content}}]}


@pytest.fixture()
def server():
    stub = StubServer(FakeChat.respond)
    FakeChat.requests = stub.requests
    with stub as url:
        yield url


def test_endpoint_judge_posts_chat_completions(server):
    shots = [Shot("A frog became a prince.", "The frog turns out to be a prince.", True),
             Shot("Sam ran home.", "Sam runs home.", False)]
    judge = EndpointJudge(server, model="judge-model", api_key="k123", shots=shots, retries=1)
    verdicts = judge(["Tom found a box. It was a dragon!", "Tom found a box. He played."], "Twist")
    assert verdicts == [True, False]
    first = FakeChat.requests[0]
    assert first["path"] == "/v1/chat/completions" and first["auth"] == "Bearer k123"
    body = first["body"]
    assert body["model"] == "judge-model" and body["temperature"] == 0.0 and body["max_tokens"] == 200
    assert body["messages"][0] == {"role": "system", "content": SYSTEM_PROMPT}
    user = body["messages"][1]["content"]
    assert "Your task is to answer the question: Does the story have a twist?" in user
    assert "<answer>Yes</answer>" in user and "<reasoning>Sam runs home.</reasoning>" in user
    assert user.endswith("<story>\nTom found a box. It was a dragon!\n</story>\n")


def test_endpoint_errors_are_one_line(server):
    judge = EndpointJudge(server + "/v1", model="locked", retries=1)
    with pytest.raises(LlmftError, match=r"endpoint .*/v1/chat/completions: HTTP 401 Unauthorized$"):
        judge(["story"], "Twist")
    with pytest.raises(LlmftError, match="needs judge_url"):
        EndpointJudge("")


def test_prompts_urls_and_answers():
    assert classifier_prompt(" A story. ", "Twist") == (
        "You will be presented with a story written for children.\nYour task is to answer the question: "
        "Does the story have a twist? Answer only Yes or No.\n\nA story.\n\nDoes the story have a twist?")
    question = "Does the story have a twist?"
    assert parse_answer("Does the story have a twist? Yes.", question) is True
    assert parse_answer("Yes, it is a story. Does the story have a twist? No", question) is False
    assert parse_answer("<reasoning>yes-men</reasoning><answer>No</answer>", question) is False
    assert parse_answer("Maybe", question) is False


def test_rules_judge_reads_cues():
    assert RulesJudge()(["To Tom's surprise, it was a cat.", "Tom ran."], "Twist") == [True, False]
