"""The reranker's prompt, in one readable place.

One user turn, in this order (the query first, so every candidate's prompt starts with the same tokens
and the model's key/value cache for that shared prefix is computed once per query):

    Query: [query image] [query text]
    Candidate: [candidate image] [candidate text]
    <question for this (query modality, candidate modality)> Answer True or False.

The assistant turn then starts, and the reranker reads P("True") against P("False") for the first
answer token. The question's wording depends on what is compared with what: an image against a
caption, a passage against a question, an image against a reference image changed as the text says...
"""

from __future__ import annotations

from typing import Any

from mmembed.types import Modality

T, I, IT = Modality.TEXT, Modality.IMAGE, Modality.IMAGE_TEXT  # noqa: E741 (M-BEIR shorthand)

ANSWER_HINT = "Answer True or False."
QUERY_LABEL = "Query:"
CANDIDATE_LABEL = "Candidate:"

# (query modality, candidate modality) -> the question asked after both are shown.
QUESTIONS: dict[tuple[Modality, Modality], str] = {
    (T, T): "Does the candidate passage answer or match the query text?",
    (T, I): "Does the candidate image match the query caption?",
    (T, IT): "Do the candidate image and its text match the query text?",
    (I, T): "Does the candidate text describe the query image?",
    (I, I): "Does the candidate image show the same thing as the query image?",
    (I, IT): "Do the candidate image and its text match the query image?",
    (IT, T): "Does the candidate text answer the query question about the query image?",
    # An image+text query asking for images is, in M-BEIR (CIRR, FashionIQ), a reference image plus a
    # modification instruction: the candidate must look like the reference changed as the text says.
    (IT, I): "Does the candidate image show the query image modified as the query text says?",
    (IT, IT): "Do the candidate image and its text match the query image and text?",
}


def question_for(query: Modality, candidate: Modality) -> str:
    return f"{QUESTIONS[(query, candidate)]} {ANSWER_HINT}"


def build_messages(query_text: str | None, query_has_image: bool, candidate_text: str | None,
                   candidate_has_image: bool) -> list[dict[str, Any]]:
    """The chat in Hugging Face's multimodal message format; `{"type": "image"}` marks an image slot.

    Images fill the slots in order: the query's image (if any) first, then the candidate's.
    """
    query_modality = Modality.of(query_text, object() if query_has_image else None)
    candidate_modality = Modality.of(candidate_text, object() if candidate_has_image else None)
    content: list[dict[str, Any]] = [{"type": "text", "text": f"{QUERY_LABEL}\n"}]
    if query_has_image:
        content.append({"type": "image"})
    if query_text:
        content.append({"type": "text", "text": f"{query_text}\n"})
    content.append({"type": "text", "text": f"{CANDIDATE_LABEL}\n"})
    if candidate_has_image:
        content.append({"type": "image"})
    if candidate_text:
        content.append({"type": "text", "text": f"{candidate_text}\n"})
    content.append({"type": "text", "text": question_for(query_modality, candidate_modality)})
    return [{"role": "user", "content": content}]
