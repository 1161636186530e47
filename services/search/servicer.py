"""Search's gRPC face: protobuf in, query to a handler, protobuf out."""

from __future__ import annotations

from typing import Any

from services.search import handlers
from services.search.handlers import Hit, SemanticIndex
from services.search.ports import SearchStore
from shop.search.v1 import search_service_pb2 as pb
from shop.search.v1 import search_service_pb2_grpc as pb_grpc


def to_proto(hit: Hit) -> pb.SearchResult:
    product = hit.product
    return pb.SearchResult(
        product_id=product.product_id,
        name=product.name,
        description=product.description,
        category=product.category,
        price=product.price.to_proto() if product.price else None,
        score=round(hit.ranked.score, 6),
        keyword_match=hit.ranked.keyword_match,
        semantic_similarity=round(hit.ranked.similarity, 6),
    )


class SearchServicer(pb_grpc.SearchServiceServicer):
    def __init__(self, store: SearchStore, index: SemanticIndex) -> None:
        self._store = store
        self._index = index

    async def SearchProducts(
        self, request: pb.SearchProductsRequest, context: Any
    ) -> pb.SearchProductsResponse:
        query = handlers.SearchProducts(
            request.q, request.category, request.page_size, request.page_token
        )
        page = await handlers.search_products(self._store, self._index, query)
        return pb.SearchProductsResponse(
            results=[to_proto(hit) for hit in page.hits],
            next_page_token=page.next_page_token,
            ranking=pb.RANKING_HYBRID if page.semantic else pb.RANKING_KEYWORD,
        )
