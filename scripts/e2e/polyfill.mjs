// Polyfills that matrix-js-sdk 43 needs on Node 20.
//
// matrix-js-sdk (and the crypto code that later suites will use) calls
// Promise.withResolvers(), which only exists natively from Node 22.
// This module must be imported BEFORE matrix-js-sdk is first evaluated;
// helpers.mjs does that, so test files should import helpers.mjs rather
// than matrix-js-sdk directly (or import this file first).

if (typeof Promise.withResolvers !== "function") {
    Object.defineProperty(Promise, "withResolvers", {
        configurable: true,
        writable: true,
        enumerable: false,
        value: function withResolvers() {
            let resolve;
            let reject;
            const promise = new this((res, rej) => {
                resolve = res;
                reject = rej;
            });
            return { promise, resolve, reject };
        },
    });
}
